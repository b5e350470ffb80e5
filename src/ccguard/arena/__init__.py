"""The red-team arena: a web app where people try to jailbreak a guarded model, graded for universal jailbreaks."""
