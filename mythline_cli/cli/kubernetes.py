"""``mythline schedule kubernetes``: CronJobs and a ConfigMap from the config."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import UsageError
from ._util import boundary, fail_line, out, print_json, settings

HELP = """Print (or write to --out DIR) Kubernetes manifests that run every agent as a CronJob.

One CronJob per agent at its interval (rounded as for cron), concurrencyPolicy Forbid,
backoffLimit 0 (the next scheduled run is the retry), a paused or disabled agent's CronJob
suspended; the watchdog's CronJob every 5 minutes; the config file and its prompts in the
mythline-config ConfigMap. MYTHLINE_STATE (the shared state's DSN) and the provider's key
come from the Secret "mythline" as environment variables: no secret is written. After
`mythline pause` or `resume`, generate and apply again. See docs/many-hosts.md.

Examples:

\b
  mythline schedule kubernetes | kubectl apply -f -
  mythline schedule kubernetes --image registry.example/mythline:0.1.0 --out k8s && kubectl apply -f k8s
"""


def kubernetes_cli(
    out_dir: Path = typer.Option(None, "--out", help="Write one file per object into this folder (created if "
                                 "missing; files an earlier run wrote that are no longer needed are removed) "
                                 "instead of printing them.", file_okay=False),
    image: str = typer.Option(None, "--image", help="Container image the pods run (default: mythline:VERSION, "
                              "this version; built from the Dockerfile)."),
    namespace: str = typer.Option(None, "--namespace", "-n", help="Namespace of every object (default: mythline)."),
    json_out: bool = typer.Option(False, "--json", help="With --out: print the files written and removed, and "
                                  "the suspended agents, as JSON."),
) -> None:
    with boundary():
        from .. import kubernetes

        if json_out and out_dir is None:
            raise UsageError("--json lists the files written; use it with --out DIR")
        plan = kubernetes.plan(settings(), image=image or kubernetes.DEFAULT_IMAGE,
                               namespace=namespace or kubernetes.DEFAULT_NAMESPACE)
        for warning in plan.warnings:
            fail_line(f"warning: {warning}")
        if out_dir is None:
            typer.echo(kubernetes.render(plan.manifests), nl=False)
            return
        written, removed = kubernetes.write(plan.manifests, out_dir)
        if json_out:
            print_json({"written": [str(p) for p in written], "removed": [str(p) for p in removed],
                        "suspended": plan.suspended})
            return
        con = out()
        agents = sum(1 for m in plan.manifests if m.filename.startswith("cronjob-")) - 1
        con.print(f"wrote {agents} agent CronJob(s), the watchdog's"
                  + (" and the ConfigMap" if any(m.filename == "configmap.yaml" for m in plan.manifests) else "")
                  + f" to {out_dir}" + (f"; removed {', '.join(p.name for p in removed)}" if removed else ""),
                  markup=False)
        if plan.suspended:
            con.print("suspended: " + ", ".join(f"{a} ({why})" for a, why in plan.suspended.items()), markup=False)
        con.print(f"apply them with: kubectl apply -f {out_dir} (the namespace and the Secret first: see "
                  "docs/many-hosts.md)", markup=False)
