"""Configuration in one room: the settings table, the configuration file, the resolver, and
what a run needs.

`table` defines every setting once; `file` reads and validates the TOML configuration file;
`resolve` merges flags, environment, file and defaults into plain values; `needs` is the one
check of what a run cannot do without (run, doctor and config show share it). The CLI's
options are generated from the table; below the application layer nothing imports this
package: the engine and the adapters get plain values.
"""
