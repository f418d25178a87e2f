// temporary: module limiter has no sources yet
