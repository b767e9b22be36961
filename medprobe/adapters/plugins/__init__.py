"""Built-in ``medprobe.models`` plugins (plain torch vision encoders)."""
