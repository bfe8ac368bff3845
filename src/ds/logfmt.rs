//! Pure helpers for log lines: messages the pure core asks the glue to log (with the
//! severity and the function name of the C module's equivalent message), and the function
//! name shown for the glue's own messages.

/// Severity of a message (Kamailio's L_ERR, L_WARN, L_INFO, L_DBG).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Err,
    Warn,
    Info,
    Dbg,
}

/// A message to log: severity, the C module's function that logs it, text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub level: Level,
    pub func: &'static str,
    pub msg: String,
}

impl Note {
    pub fn new(level: Level, func: &'static str, msg: String) -> Note {
        Note { level, func, msg }
    }
}

/// The bare name of the function a `fn_name!()` was expanded in, from the type name of a
/// local item (`dispatcher::module::rpc::rpc_reload::{{closure}}::here` → `rpc_reload`).
pub fn short_fn_name(type_name: &'static str) -> &'static str {
    let mut s = type_name.strip_suffix("::here").unwrap_or(type_name);
    while let Some(t) = s.strip_suffix("::{{closure}}") {
        s = t;
    }
    s.rsplit("::").next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names() {
        assert_eq!(short_fn_name("dispatcher::module::rpc::rpc_reload::{{closure}}::here"), "rpc_reload");
        assert_eq!(short_fn_name("dispatcher::module::state::init::here"), "init");
        assert_eq!(short_fn_name("here"), "here");
        fn outer() -> &'static str {
            let f = || {
                fn here() {}
                short_fn_name(std::any::type_name_of_val(&here))
            };
            f()
        }
        assert_eq!(outer(), "outer");
    }
}
