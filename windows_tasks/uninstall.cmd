@echo off
rem Removes the Mythline agents' tasks from Task Scheduler.
rem Regenerate: mythline schedule windows --out windows_tasks --exe "C:\Users\you\mythline\.venv\Scripts\mythlinew.exe" --home "%LOCALAPPDATA%\mythline"
schtasks /Delete /TN "Mythline\world-zones" /F
schtasks /Delete /TN "Mythline\world-npcs" /F
schtasks /Delete /TN "Mythline\world-factions" /F
schtasks /Delete /TN "Mythline\world-lore" /F
schtasks /Delete /TN "Mythline\world-items" /F
schtasks /Delete /TN "Mythline\quest-chains" /F
schtasks /Delete /TN "Mythline\character-archetypes" /F
schtasks /Delete /TN "Mythline\faction-dynamics" /F
schtasks /Delete /TN "Mythline\narrative-history" /F
schtasks /Delete /TN "Mythline\lore-crosscheck" /F
schtasks /Delete /TN "Mythline\watchdog" /F
