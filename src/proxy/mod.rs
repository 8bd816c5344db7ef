//! pingora: the only module that knows it. One app per file: the metadata app
//! ([`metadata`]), the listener that bounds connections around it ([`listener`]), the
//! admin app ([`admin`]); [`run`] assembles them into a server.

mod admin;
mod listener;
mod metadata;
mod run;

pub(crate) use run::run;
