//! The apply step against a mock API server.
