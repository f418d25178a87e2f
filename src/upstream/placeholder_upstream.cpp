// temporary: module upstream has no sources yet
