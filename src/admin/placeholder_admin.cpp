// temporary: module admin has no sources yet
