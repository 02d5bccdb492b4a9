"""The router's gRPC surface: servicer, pb conversions, status mapping, app wiring."""
