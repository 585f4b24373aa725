@echo off
rem Registers the Mythline agents with Task Scheduler (the tasks run as you).
rem Regenerate: mythline schedule windows --out windows_tasks --exe "C:\Users\you\mythline\.venv\Scripts\mythlinew.exe" --home "%LOCALAPPDATA%\mythline"
setlocal
set FAILED=
schtasks /Create /TN "Mythline\world-zones" /XML "%~dp0world-zones.xml" /F || set FAILED=1
schtasks /Create /TN "Mythline\world-npcs" /XML "%~dp0world-npcs.xml" /F || set FAILED=1
schtasks /Create /TN "Mythline\world-factions" /XML "%~dp0world-factions.xml" /F || set FAILED=1
schtasks /Create /TN "Mythline\world-lore" /XML "%~dp0world-lore.xml" /F || set FAILED=1
schtasks /Create /TN "Mythline\world-items" /XML "%~dp0world-items.xml" /F || set FAILED=1
schtasks /Create /TN "Mythline\quest-chains" /XML "%~dp0quest-chains.xml" /F || set FAILED=1
schtasks /Create /TN "Mythline\character-archetypes" /XML "%~dp0character-archetypes.xml" /F || set FAILED=1
schtasks /Create /TN "Mythline\faction-dynamics" /XML "%~dp0faction-dynamics.xml" /F || set FAILED=1
schtasks /Create /TN "Mythline\narrative-history" /XML "%~dp0narrative-history.xml" /F || set FAILED=1
schtasks /Create /TN "Mythline\lore-crosscheck" /XML "%~dp0lore-crosscheck.xml" /F || set FAILED=1
schtasks /Create /TN "Mythline\watchdog" /XML "%~dp0watchdog.xml" /F || set FAILED=1
if defined FAILED (
  echo Some Mythline tasks were not registered; see the errors above.
  exit /b 1
)
echo Registered 11 Mythline task(s). See them with: schtasks /Query /TN "Mythline\"
