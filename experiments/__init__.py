"""Studies and benchmarks: each file has get_config/get_sweep or a main()."""
