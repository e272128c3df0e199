"""docdesk: edit documents in ONLYOFFICE Docs and never lose a save."""
