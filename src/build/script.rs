//! Renders the script a build instance runs (Linux shell, Windows PowerShell) from an `InstanceJob`.

