// temporary: module proxy has no sources yet
