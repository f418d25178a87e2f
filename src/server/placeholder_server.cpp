// temporary: module server has no sources yet
