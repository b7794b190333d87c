"""First-boot formation: one module per service. Each renders its files with a pure function of the config."""
