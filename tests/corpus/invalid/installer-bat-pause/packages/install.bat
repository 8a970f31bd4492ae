@echo off
msiexec /i agent.msi /qn
pause
