//! Text with `{field}` placeholders filled from an event: alert labels, Kafka topics and keys.
//!
//! Fields: `namespace`, `kind`, `name`, `reason`, `type`, `severity`, `category`, `host`,
//! `message`, `count`, `correlation_id`, `uid` and `resource_version`, and in templates
//! `label.NAME` (a label set by `classify` rules or plugins, e.g. `{label.cluster}`). An
//! absent value renders as the empty string.

use serde::{Deserialize, Deserializer};

use crate::event::Event;

/// A field a template or `group_by` can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The event's namespace (the involved object's when the event has none).
    Namespace,
    /// The involved object's kind.
    Kind,
    /// The involved object's name.
    Name,
    /// The reason.
    Reason,
    /// `Normal` or `Warning`.
    Type,
    /// Severity from `classify`.
    Severity,
    /// Category from `classify`.
    Category,
    /// The node.
    Host,
    /// The message.
    Message,
    /// Occurrences the event stands for.
    Count,
    /// The incident from `correlate`.
    CorrelationId,
    /// The Event object's uid.
    Uid,
    /// The Event object's resourceVersion.
    ResourceVersion,
}

impl Field {
    /// The field called `name` in templates.
    pub fn parse(name: &str) -> Option<Field> {
        Some(match name {
            "namespace" => Field::Namespace,
            "kind" => Field::Kind,
            "name" => Field::Name,
            "reason" => Field::Reason,
            "type" => Field::Type,
            "severity" => Field::Severity,
            "category" => Field::Category,
            "host" => Field::Host,
            "message" => Field::Message,
            "count" => Field::Count,
            "correlation_id" => Field::CorrelationId,
            "uid" => Field::Uid,
            "resource_version" => Field::ResourceVersion,
            _ => return None,
        })
    }

    /// Appends the field's value in `e` (empty when absent).
    pub fn render(self, e: &Event, out: &mut String) {
        match self {
            Field::Namespace => out.push_str(crate::condition::namespace_of(e)),
            Field::Kind => out.push_str(&e.object.kind),
            Field::Name => out.push_str(&e.object.name),
            Field::Reason => out.push_str(&e.reason),
            Field::Type => out.push_str(&e.event_type),
            Field::Severity => out.push_str(e.severity.map_or("", |s| s.as_str())),
            Field::Category => out.push_str(e.category.map_or("", |c| c.as_str())),
            Field::Host => out.push_str(&e.host),
            Field::Message => out.push_str(&e.message),
            Field::Count => out.push_str(&e.occurrences().to_string()),
            Field::CorrelationId => out.push_str(e.correlation_id.as_deref().unwrap_or("")),
            Field::Uid => out.push_str(&e.uid),
            Field::ResourceVersion => out.push_str(&e.resource_version),
        }
    }
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Field::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown field `{name}`")))
    }
}

/// What a placeholder stands for.
#[derive(Debug, Clone)]
enum Placeholder {
    /// One of the event's fields.
    Field(Field),
    /// A label (`{label.NAME}`).
    Label(String),
}

/// Text with `{field}` placeholders.
#[derive(Debug, Clone)]
pub struct Template(Vec<(String, Option<Placeholder>)>);

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let mut pieces = Vec::new();
        let mut rest = text.as_str();
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}') else {
                return Err(serde::de::Error::custom(format!(
                    "unclosed `{{` in `{text}`"
                )));
            };
            let name = &rest[open + 1..open + close];
            let field = match name.strip_prefix("label.") {
                Some(label) if !label.is_empty() => Placeholder::Label(label.to_owned()),
                _ => Placeholder::Field(Field::parse(name).ok_or_else(|| {
                    serde::de::Error::custom(format!("unknown field `{{{name}}}` in `{text}`"))
                })?),
            };
            pieces.push((rest[..open].to_owned(), Some(field)));
            rest = &rest[open + close + 1..];
        }
        pieces.push((rest.to_owned(), None));
        Ok(Template(pieces))
    }
}

impl Template {
    /// The text when it has no placeholders.
    pub fn constant(&self) -> Option<&str> {
        match self.0.as_slice() {
            [(text, None)] => Some(text),
            _ => None,
        }
    }

    /// The text with each placeholder replaced by the event's value.
    pub fn render(&self, e: &Event) -> String {
        let mut out = String::new();
        for (text, field) in &self.0 {
            out.push_str(text);
            match field {
                Some(Placeholder::Field(f)) => f.render(e, &mut out),
                Some(Placeholder::Label(l)) => {
                    out.push_str(e.labels.get(l.as_str()).map_or("", |v| v.as_str()))
                }
                None => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_render_fields_and_labels() {
        let t: Template = serde_json::from_str(r#""{label.cluster}/{namespace}/{label.none}""#)
            .expect("valid template");
        let mut e = Event {
            namespace: "shop".into(),
            ..Event::default()
        };
        e.labels.insert("cluster".into(), "prod-eu-1".into());
        assert_eq!(t.render(&e), "prod-eu-1/shop/");
        assert!(serde_json::from_str::<Template>(r#""{label.}""#).is_err());
    }
}
