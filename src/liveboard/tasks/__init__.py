"""The task service: workspaces, members, projects and tasks; each change commits its event."""
