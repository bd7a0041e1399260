"""orderpipe core: the validation engine, the pipeline's domain and its AWS adapters."""
