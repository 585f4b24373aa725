"""Crontab lines and Task Scheduler XML from the config, and what is installed of them.

``common``: what both share (the executable, the carried environment, slot timing, drift);
``cron``: the crontab block; ``tasks``: Task Scheduler files. Import from here.
"""

from __future__ import annotations

from ..errors import SchedulerError
from .common import (
                     CARRIED_ENV,
                     DAY,
                     HOUR_STEPS,
                     MINUTE_STEPS,
                     MONTHLY_MIN,
                     WATCHDOG_MINUTES,
                     WEEK,
                     WINDOWLESS_EXE,
                     Drift,
                     Timing,
                     carried_env,
                     compare,
                     cron_home,
                     cron_keys_path,
                     cron_timing,
                     keys_file_env,
                     mythline_command,
                     task_interval,
                     windowless_command,
)
from .cron import (
                     BEGIN,
                     END,
                     FLEET,
                     WATCHDOG,
                     WATCHDOG_SPEC,
                     CronChange,
                     CronPlan,
                     Crontab,
                     cron_drift,
                     crontab_program,
                     entries,
                     install_cron,
                     job_key,
                     merged_entries,
                     plan_cron,
                     preamble,
                     read_crontab,
                     render_block,
                     sh_quote,
                     watchdog_entry,
                     write_crontab,
)
from .tasks import (
                     KILL_MARGIN,
                     START_DATE,
                     TASK_FOLDER,
                     TASK_NS,
                     WATCHDOG_TASK,
                     TaskPlan,
                     carried_home,
                     install_script,
                     plan_windows,
                     query_task,
                     task_bytes,
                     task_fields,
                     task_name,
                     task_xml,
                     uninstall_script,
                     windows_drift,
                     write_file,
                     write_windows,
)

__all__ = [
    "BEGIN", "CARRIED_ENV", "DAY", "END", "FLEET", "HOUR_STEPS", "KILL_MARGIN", "MINUTE_STEPS", "MONTHLY_MIN",
    "START_DATE", "TASK_FOLDER", "TASK_NS", "WATCHDOG", "WATCHDOG_MINUTES", "WATCHDOG_SPEC", "WATCHDOG_TASK",
    "WEEK", "WINDOWLESS_EXE", "CronChange", "CronPlan", "Crontab", "Drift", "SchedulerError", "TaskPlan", "Timing",
    "carried_env", "carried_home", "compare", "cron_drift", "cron_home", "cron_keys_path", "cron_timing",
    "crontab_program", "entries", "install_cron", "install_script", "job_key", "keys_file_env", "merged_entries",
    "mythline_command", "plan_cron", "plan_windows", "preamble", "query_task", "read_crontab", "render_block",
    "sh_quote", "task_bytes", "task_fields", "task_interval", "task_name", "task_xml", "uninstall_script",
    "watchdog_entry", "windowless_command", "windows_drift", "write_crontab", "write_file", "write_windows",
]
