//! Tidewire end-to-end harness: a throwaway PostgreSQL cluster and a relay on port 0.
