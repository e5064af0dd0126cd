"""CargoScan's command line (`cargoscan`), above both packages it drives.

It sits outside the torch-free runtime (`inference`) and the training side (`training`)
so that neither imports the other through it: `serve`, `analyze` and the administration
commands use `inference` only, the data and model commands import `training` (and torch)
inside their handlers, and `simulate`/`demo` run the scanner station in `station`.
"""
