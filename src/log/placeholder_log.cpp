// temporary: module log has no sources yet
