// Carrier of the precompiled header shared by every module.
