"""docdesk served over real HTTP, called by a stand-in Document Server."""
