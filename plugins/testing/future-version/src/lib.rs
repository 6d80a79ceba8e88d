//! A plugin built against a future contract version (`kollate:plugin@0.2.0`): the host
//! must refuse it at start-up with a message naming both versions.

wit_bindgen::generate!({
    inline: r#"
        package kollate:plugin@0.2.0;

        interface transform {
            version: func() -> string;
        }

        world plugin {
            export transform;
        }
    "#,
});

struct Future;

impl exports::kollate::plugin::transform::Guest for Future {
    fn version() -> String {
        "0.2.0".into()
    }
}

export!(Future);
