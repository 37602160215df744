//! Handlebars templates for `haproxy.cfg`: strict mode (a missing field is an error, not an
//! empty string) and no HTML escaping (a config file is not HTML).

use handlebars::Handlebars;

use super::model::Model;

/// A compiled template.
pub struct Template {
    registry: Handlebars<'static>,
    source: String,
}

/// Why a template could not be compiled or rendered.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(String);

const NAME: &str = "haproxy.cfg";

impl Template {
    /// Compiles `text`; `source` names it in error messages (usually its path).
    pub fn compile(text: &str, source: &str) -> Result<Template, TemplateError> {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        registry.register_escape_fn(handlebars::no_escape);
        registry
            .register_template_string(NAME, text)
            .map_err(|e| TemplateError(format!("{source}: {e}")))?;
        Ok(Template {
            registry,
            source: source.to_owned(),
        })
    }

    /// Renders the template over `model`.
    pub fn render(&self, model: &Model) -> Result<String, TemplateError> {
        self.registry
            .render(NAME, model)
            .map_err(|e| TemplateError(format!("{}: {e}", self.source)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::haproxy::model::{Address, ModelMember};

    fn model() -> Model {
        let m = ModelMember {
            name: "web<1>&".to_owned(),
            id: 7,
            address: "10.0.0.2".parse().expect("ip"),
            port: 3000,
            status: "alive",
            tags: [("role".to_owned(), "backend".to_owned())].into(),
        };
        Model {
            role: Some("backend".to_owned()),
            addresses: vec![Address {
                host: m.name.clone(),
                ip: m.address,
            }],
            members: vec![m],
            hold_timeout_ms: 15_000,
        }
    }

    #[test]
    fn renders_without_escaping() {
        let t = Template::compile(
            "{{#each members}}server {{name}} {{address}}:{{port}} # {{tags.role}}\n{{/each}}",
            "t",
        )
        .expect("compiles");
        assert_eq!(
            t.render(&model()).expect("renders"),
            "server web<1>& 10.0.0.2:3000 # backend\n"
        );
    }

    #[test]
    fn renders_the_labs_own_template() {
        let lab = "{{#each addresses}}\nserver {{ host }} {{ ip }}:3000 check\n{{/each}}\n";
        let t = Template::compile(lab, "lab").expect("compiles");
        assert_eq!(
            t.render(&model()).expect("renders"),
            "server web<1>& 10.0.0.2:3000 check\n"
        );
    }

    #[test]
    fn strict_mode_names_the_missing_field() {
        let t = Template::compile("{{#each members}}{{nmae}}{{/each}}", "x.hbs").expect("compiles");
        let e = t.render(&model()).expect_err("missing field").to_string();
        assert!(e.starts_with("x.hbs: "), "{e}");
        assert!(e.contains("nmae"), "{e}");
    }

    #[test]
    fn a_missing_tag_can_have_a_default() {
        let t = Template::compile(
            "{{#each members}}weight {{#if tags.weight}}{{tags.weight}}{{else}}1{{/if}}{{/each}}",
            "t",
        )
        .expect("compiles");
        assert_eq!(t.render(&model()).expect("renders"), "weight 1");
    }

    #[test]
    fn syntax_errors_name_the_source() {
        let e = Template::compile("{{#each members}}", "bad.hbs")
            .err()
            .expect("unclosed block")
            .to_string();
        assert!(e.starts_with("bad.hbs: "), "{e}");
    }
}
