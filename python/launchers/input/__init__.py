"""The edge: what users give (the registry and site files, flags, environment, the
wrapper's documented flags) read, merged and validated once into a ``ServeConfig``
(``resolve``), asking the nodes' Python through ``probe`` where a fact is theirs."""
