# Installs the agent silently.
Start-Process msiexec.exe -ArgumentList '/i', 'agent.msi', '/qn' -Wait
