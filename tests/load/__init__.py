"""docdesk under many editors at once, driven through the simulator."""
