// temporary: module config has no sources yet
