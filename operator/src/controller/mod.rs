//! The reconcile pipeline: `validate (pure) → build (pure) → apply (client) → status`.

pub mod build;
pub mod validate;
