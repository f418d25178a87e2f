// temporary: module echo has no sources yet
