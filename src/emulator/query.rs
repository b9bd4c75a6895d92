//! The two small device query languages the emulator evaluates.
//!
//! - The list filter of the previews (`filter` on 2022-10-31-preview, `$filter` on
//!   2022-06-30-preview; `enabled eq true and contains(displayName, 'x')`): operators
//!   `eq ne lt le gt ge`, `and`, `or`, parentheses, `contains(displayName, '…')`, over
//!   `id, displayName, enabled, provisioned, simulated, template, scopes, type`. `type` is
//!   what the Azure CLI's IoT extension filters IoT Edge and gateway devices with
//!   (`type eq 'GatewayDevice' or type eq 'EdgeDevice'`): a device is an `EdgeDevice` when
//!   its template's `@type` holds `EdgeModel` (or it has the preview's `type: ["iotEdge"]`),
//!   a `GatewayDevice` when the template's `@type` holds `GatewayModel`, and neither
//!   otherwise.
//! - The device-group query (`SELECT * FROM devices WHERE $template = "dtmi:…" AND
//!   $provisioned = true`): comparisons `= != <> < <= > >=`, `AND`, `OR`, parentheses, over
//!   `$id, $displayName, $template, $enabled, $provisioned, $simulated, $organizations`.
//!
//! Both parse into one [`Expr`] that is type-checked while parsing (booleans compare only
//! with `true`/`false` and only for equality, `scopes` only with eq/ne), so a bad query is a
//! 400 with a message at write time, never a surprise at evaluation. Anything the service
//! accepts but the emulator does not (telemetry, properties, other functions) is refused by
//! name.

use crate::central::models::Device;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Less than.
    Lt,
    /// Less or equal.
    Le,
    /// Greater than.
    Gt,
    /// Greater or equal.
    Ge,
}

/// A device field a query may test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Device id.
    Id,
    /// Display name.
    DisplayName,
    /// Template DTMI.
    Template,
    /// Enabled.
    Enabled,
    /// Provisioned.
    Provisioned,
    /// Simulated.
    Simulated,
    /// Organizations (`scopes` / `$organizations`).
    Scopes,
    /// The device kind (`type`: `GatewayDevice`, `EdgeDevice`).
    Type,
}

/// What kind of device a device is, for the filter field `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// Neither a gateway nor an IoT Edge device.
    Plain,
    /// A gateway (its template's `@type` holds `GatewayModel`).
    Gateway,
    /// An IoT Edge device (`EdgeModel` in its template's `@type`, or `type: ["iotEdge"]`).
    Edge,
}

impl DeviceKind {
    /// The kind a device shows on its own (without its template): Edge when it has the
    /// preview's `type: ["iotEdge"]`.
    pub fn of_device(d: &Device) -> DeviceKind {
        if d.device_type
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|t| t == "iotEdge")
        {
            DeviceKind::Edge
        } else {
            DeviceKind::Plain
        }
    }

    /// The kind a template's `@type` list makes (`EdgeModel` wins over `GatewayModel`).
    pub fn of_template_types(types: &[String]) -> DeviceKind {
        if types.iter().any(|t| t == "EdgeModel") {
            DeviceKind::Edge
        } else if types.iter().any(|t| t == "GatewayModel") {
            DeviceKind::Gateway
        } else {
            DeviceKind::Plain
        }
    }

    fn name(self) -> Option<&'static str> {
        match self {
            DeviceKind::Plain => None,
            DeviceKind::Gateway => Some("GatewayDevice"),
            DeviceKind::Edge => Some("EdgeDevice"),
        }
    }
}

/// The values the filter field `type` compares with.
const DEVICE_TYPES: &[&str] = &["GatewayDevice", "EdgeDevice"];

impl Field {
    fn is_bool(self) -> bool {
        matches!(self, Field::Enabled | Field::Provisioned | Field::Simulated)
    }
}

/// A literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    Str(String),
    /// A boolean.
    Bool(bool),
}

/// A parsed, type-checked condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Always true (a query without WHERE).
    All,
    /// Both.
    And(Box<Expr>, Box<Expr>),
    /// Either.
    Or(Box<Expr>, Box<Expr>),
    /// A comparison.
    Cmp(Field, Op, Value),
    /// `contains(displayName, '…')`, case-insensitive.
    Contains(Field, String),
}

impl Expr {
    /// Evaluates the condition on a device whose kind is what it shows on its own.
    pub fn matches(&self, d: &Device) -> bool {
        self.matches_as(d, DeviceKind::of_device(d))
    }

    /// Evaluates the condition on a device of `kind` (its template decides it).
    pub fn matches_as(&self, d: &Device, kind: DeviceKind) -> bool {
        match self {
            Expr::All => true,
            Expr::And(a, b) => a.matches_as(d, kind) && b.matches_as(d, kind),
            Expr::Or(a, b) => a.matches_as(d, kind) || b.matches_as(d, kind),
            Expr::Cmp(Field::Type, op, Value::Str(v)) => {
                let is = kind.name() == Some(v.as_str());
                if *op == Op::Ne {
                    !is
                } else {
                    is
                }
            }
            Expr::Contains(f, needle) => str_field(d, *f)
                .map(|s| s.to_lowercase().contains(&needle.to_lowercase()))
                .unwrap_or(false),
            Expr::Cmp(Field::Scopes, op, Value::Str(v)) => {
                let has = d
                    .organizations
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .any(|o| o == v);
                if *op == Op::Ne {
                    !has
                } else {
                    has
                }
            }
            Expr::Cmp(f, op, Value::Bool(v)) => {
                let actual = match f {
                    Field::Enabled => d.enabled.unwrap_or(true),
                    Field::Provisioned => d.provisioned.unwrap_or(false),
                    Field::Simulated => d.simulated.unwrap_or(false),
                    _ => return false,
                };
                if *op == Op::Ne {
                    actual != *v
                } else {
                    actual == *v
                }
            }
            Expr::Cmp(f, op, Value::Str(v)) => match str_field(d, *f) {
                None => *op == Op::Ne,
                Some(actual) => {
                    let ord = actual.cmp(v.as_str());
                    match op {
                        Op::Eq => ord.is_eq(),
                        Op::Ne => ord.is_ne(),
                        Op::Lt => ord.is_lt(),
                        Op::Le => ord.is_le(),
                        Op::Gt => ord.is_gt(),
                        Op::Ge => ord.is_ge(),
                    }
                }
            },
        }
    }
}

fn str_field(d: &Device, f: Field) -> Option<&str> {
    match f {
        Field::Id => d.id.as_deref(),
        Field::DisplayName => d.display_name.as_deref(),
        Field::Template => d.template.as_deref(),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Sym(&'static str),
    LParen,
    RParen,
    Comma,
    Star,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            '*' => {
                out.push(Tok::Star);
                i += 1
            }
            '\'' | '"' => {
                let quote = c;
                let mut v = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(format!("unterminated string starting with {quote}")),
                        Some(&q) if q == quote => {
                            if chars.get(i + 1) == Some(&quote) {
                                v.push(quote);
                                i += 2;
                            } else {
                                i += 1;
                                break;
                            }
                        }
                        Some(&ch) => {
                            v.push(ch);
                            i += 1
                        }
                    }
                }
                out.push(Tok::Str(v));
            }
            '=' => {
                out.push(Tok::Sym("="));
                i += 1
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Sym("!="));
                i += 2
            }
            '<' | '>' => {
                let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
                let sym = match two.as_str() {
                    "<=" => "<=",
                    ">=" => ">=",
                    "<>" => "<>",
                    _ if c == '<' => "<",
                    _ => ">",
                };
                i += sym.len();
                out.push(Tok::Sym(sym));
            }
            c if c.is_alphanumeric()
                || c == '$'
                || c == '_'
                || c == '-'
                || c == '.'
                || c == ':' =>
            {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric()
                        || matches!(chars[i], '$' | '_' | '-' | '.' | ':'))
                {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    Ok(out)
}

#[derive(Clone, Copy, PartialEq)]
enum Dialect {
    Filter,
    GroupQuery,
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    dialect: Dialect,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s.eq_ignore_ascii_case(kw))
    }
    fn expect(&mut self, t: Tok, what: &str) -> Result<(), String> {
        match self.next() {
            Some(x) if x == t => Ok(()),
            Some(x) => Err(format!("expected {what}, found {}", show(&x))),
            None => Err(format!("expected {what}, found the end of the query")),
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.keyword("or") {
            self.pos += 1;
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.primary()?;
        while self.keyword("and") {
            self.pos += 1;
            let right = self.primary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<Expr, String> {
        self.depth += 1;
        if self.depth > 64 {
            return Err("the query nests too deeply".into());
        }
        let out = match self.next() {
            Some(Tok::LParen) => {
                let e = self.or()?;
                self.expect(Tok::RParen, "')'")?;
                Ok(e)
            }
            Some(Tok::Ident(name)) if self.peek() == Some(&Tok::LParen) => self.function(&name),
            Some(Tok::Ident(name)) => {
                let field = self.field(&name)?;
                let op = self.op()?;
                let value = match self.next() {
                    Some(Tok::Str(s)) => Value::Str(s),
                    Some(Tok::Ident(b)) if b == "true" || b == "false" => Value::Bool(b == "true"),
                    Some(Tok::Ident(b))
                        if self.dialect == Dialect::GroupQuery
                            && (b.eq_ignore_ascii_case("true")
                                || b.eq_ignore_ascii_case("false")) =>
                    {
                        Value::Bool(b.eq_ignore_ascii_case("true"))
                    }
                    Some(x) => {
                        return Err(format!(
                            "expected a quoted string, true or false after the operator, found {}",
                            show(&x)
                        ))
                    }
                    None => {
                        return Err(
                            "expected a value after the operator, found the end of the query"
                                .into(),
                        )
                    }
                };
                check(&name, field, op, &value)?;
                Ok(Expr::Cmp(field, op, value))
            }
            Some(x) => Err(format!("expected a condition, found {}", show(&x))),
            None => Err("expected a condition, found the end of the query".into()),
        };
        self.depth -= 1;
        out
    }

    fn function(&mut self, name: &str) -> Result<Expr, String> {
        if self.dialect != Dialect::Filter || name != "contains" {
            return Err(format!(
                "function {name:?} is not supported by the emulator (only contains(displayName, '…') in list filters)"
            ));
        }
        self.expect(Tok::LParen, "'('")?;
        let field = match self.next() {
            Some(Tok::Ident(f)) => self.field(&f)?,
            _ => return Err("contains() takes a field name first".into()),
        };
        if field != Field::DisplayName {
            return Err("contains() works on displayName only".into());
        }
        self.expect(Tok::Comma, "','")?;
        let needle = match self.next() {
            Some(Tok::Str(s)) => s,
            _ => return Err("contains() takes a quoted string second".into()),
        };
        self.expect(Tok::RParen, "')'")?;
        Ok(Expr::Contains(field, needle))
    }

    fn field(&self, name: &str) -> Result<Field, String> {
        let known = match self.dialect {
            Dialect::Filter => match name {
                "id" => Some(Field::Id),
                "displayName" => Some(Field::DisplayName),
                "template" => Some(Field::Template),
                "enabled" => Some(Field::Enabled),
                "provisioned" => Some(Field::Provisioned),
                "simulated" => Some(Field::Simulated),
                "scopes" => Some(Field::Scopes),
                "type" => Some(Field::Type),
                _ => None,
            },
            Dialect::GroupQuery => match name {
                "$id" => Some(Field::Id),
                "$displayName" => Some(Field::DisplayName),
                "$template" => Some(Field::Template),
                "$enabled" => Some(Field::Enabled),
                "$provisioned" => Some(Field::Provisioned),
                "$simulated" => Some(Field::Simulated),
                "$organizations" => Some(Field::Scopes),
                _ => None,
            },
        };
        known.ok_or_else(|| match self.dialect {
            Dialect::Filter => format!(
                "unknown filter field {name:?} (supported: id, displayName, enabled, provisioned, simulated, template, scopes, type)"
            ),
            Dialect::GroupQuery => format!(
                "field {name:?} is not supported by the emulator's device group queries (supported: $id, $displayName, $template, $enabled, $provisioned, $simulated, $organizations)"
            ),
        })
    }

    fn op(&mut self) -> Result<Op, String> {
        let t = self.next();
        let op = match (&t, self.dialect) {
            (Some(Tok::Ident(s)), Dialect::Filter) => match s.as_str() {
                "eq" => Some(Op::Eq),
                "ne" => Some(Op::Ne),
                "lt" => Some(Op::Lt),
                "le" => Some(Op::Le),
                "gt" => Some(Op::Gt),
                "ge" => Some(Op::Ge),
                _ => None,
            },
            (Some(Tok::Sym(s)), Dialect::GroupQuery) => match *s {
                "=" => Some(Op::Eq),
                "!=" | "<>" => Some(Op::Ne),
                "<" => Some(Op::Lt),
                "<=" => Some(Op::Le),
                ">" => Some(Op::Gt),
                ">=" => Some(Op::Ge),
                _ => None,
            },
            _ => None,
        };
        op.ok_or_else(|| {
            let allowed = match self.dialect {
                Dialect::Filter => "eq, ne, lt, le, gt, ge",
                Dialect::GroupQuery => "=, !=, <>, <, <=, >, >=",
            };
            match t {
                Some(x) => format!("expected an operator ({allowed}), found {}", show(&x)),
                None => format!("expected an operator ({allowed}), found the end of the query"),
            }
        })
    }
}

fn check(name: &str, field: Field, op: Op, value: &Value) -> Result<(), String> {
    match value {
        Value::Bool(_) if !field.is_bool() => Err(format!(
            "{name} compares with a quoted string, not a boolean"
        )),
        Value::Str(_) if field.is_bool() => {
            Err(format!("{name} compares with true or false, not a string"))
        }
        Value::Bool(_) if !matches!(op, Op::Eq | Op::Ne) => Err(format!(
            "{name} is a boolean: only equality and inequality apply"
        )),
        _ if matches!(field, Field::Scopes | Field::Type) && !matches!(op, Op::Eq | Op::Ne) => {
            Err(format!("{name} supports only equality and inequality"))
        }
        Value::Str(v) if field == Field::Type && !DEVICE_TYPES.contains(&v.as_str()) => {
            Err(format!(
                "type compares with {}, not {v:?}",
                DEVICE_TYPES.join(" or ")
            ))
        }
        _ => Ok(()),
    }
}

fn show(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("{s:?}"),
        Tok::Str(s) => format!("the string {s:?}"),
        Tok::Sym(s) => format!("{s:?}"),
        Tok::LParen => "'('".into(),
        Tok::RParen => "')'".into(),
        Tok::Comma => "','".into(),
        Tok::Star => "'*'".into(),
    }
}

const MAX_QUERY: usize = 4096;

/// Parses a preview list `filter`.
pub fn parse_filter(s: &str) -> Result<Expr, String> {
    if s.len() > MAX_QUERY {
        return Err(format!("the filter is longer than {MAX_QUERY} characters"));
    }
    let toks = tokenize(s)?;
    if toks.is_empty() {
        return Err("the filter is empty".into());
    }
    let mut p = Parser {
        toks,
        pos: 0,
        dialect: Dialect::Filter,
        depth: 0,
    };
    let e = p.or()?;
    match p.next() {
        None => Ok(e),
        Some(t) => Err(format!(
            "unexpected {} after the end of the filter",
            show(&t)
        )),
    }
}

/// Parses a device-group query `SELECT * FROM devices [WHERE …]`.
pub fn parse_group_query(s: &str) -> Result<Expr, String> {
    if s.len() > MAX_QUERY {
        return Err(format!("the query is longer than {MAX_QUERY} characters"));
    }
    let toks = tokenize(s)?;
    let mut p = Parser {
        toks,
        pos: 0,
        dialect: Dialect::GroupQuery,
        depth: 0,
    };
    if !p.keyword("select") {
        return Err("a device group query starts with SELECT * FROM devices".into());
    }
    p.pos += 1;
    if p.next() != Some(Tok::Star) {
        return Err(
            "device group queries select * (projections are not supported by the emulator)".into(),
        );
    }
    if !p.keyword("from") {
        return Err("expected FROM after SELECT *".into());
    }
    p.pos += 1;
    match p.next() {
        Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("devices") => {}
        Some(Tok::Ident(s)) if s.starts_with("dtmi:") => {
            return Err("selecting FROM a template is not supported by the emulator; use FROM devices WHERE $template = \"…\"".into())
        }
        _ => return Err("expected FROM devices".into()),
    }
    let e = if p.peek().is_none() {
        Expr::All
    } else if p.keyword("where") {
        p.pos += 1;
        p.or()?
    } else {
        return Err("expected WHERE or the end of the query after FROM devices".into());
    };
    match p.next() {
        None => Ok(e),
        Some(t) => Err(format!(
            "unexpected {} after the end of the query",
            show(&t)
        )),
    }
}

/// Parses `orderby`: `displayName [asc|desc]`; `true` = descending.
pub fn parse_orderby(s: &str) -> Result<bool, String> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    match parts.as_slice() {
        ["displayName"] | ["displayName", "asc"] => Ok(false),
        ["displayName", "desc"] => Ok(true),
        _ => Err(format!(
            "orderby {s:?} is not supported: use displayName, optionally followed by asc or desc"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(id: &str, name: &str, prov: bool, orgs: &[&str]) -> Device {
        Device {
            id: Some(id.into()),
            display_name: Some(name.into()),
            template: Some("dtmi:a:b;1".into()),
            enabled: Some(true),
            provisioned: Some(prov),
            simulated: Some(false),
            organizations: Some(orgs.iter().map(|s| s.to_string()).collect()),
            ..Device::default()
        }
    }

    #[test]
    fn type_filters_edge_and_gateway_devices() {
        let e = parse_filter("type eq 'GatewayDevice' or type eq 'EdgeDevice'").unwrap();
        let d = dev("d1", "x", false, &[]);
        assert!(!e.matches_as(&d, DeviceKind::Plain));
        assert!(e.matches_as(&d, DeviceKind::Gateway));
        assert!(e.matches_as(&d, DeviceKind::Edge));
        let not_edge = parse_filter("type ne 'EdgeDevice'").unwrap();
        assert!(not_edge.matches_as(&d, DeviceKind::Gateway));
        assert!(!not_edge.matches_as(&d, DeviceKind::Edge));
        let mut edge = d.clone();
        edge.device_type = Some(vec!["iotEdge".into()]);
        assert!(
            e.matches(&edge),
            "the preview's own type makes an edge device"
        );
        assert!(!e.matches(&d));
        let types = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            DeviceKind::of_template_types(&types(&["DeviceModel", "EdgeModel", "GatewayModel"])),
            DeviceKind::Edge
        );
        assert_eq!(
            DeviceKind::of_template_types(&types(&["DeviceModel", "GatewayModel"])),
            DeviceKind::Gateway
        );
        for bad in ["type eq 'Robot'", "type gt 'EdgeDevice'", "type eq true"] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
        assert!(parse_group_query("SELECT * FROM devices WHERE type = 'EdgeDevice'").is_err());
    }

    #[test]
    fn seed_group_query_parses_and_evaluates() {
        let e = parse_group_query(
            "SELECT * FROM devices WHERE $template = \"dtmi:a:b;1\" AND $provisioned = true",
        )
        .unwrap();
        assert!(e.matches(&dev("d1", "x", true, &[])));
        assert!(!e.matches(&dev("d1", "x", false, &[])));
        assert_eq!(
            parse_group_query("select * from devices").unwrap(),
            Expr::All
        );
    }

    #[test]
    fn filter_operators_and_contains() {
        let e =
            parse_filter("contains(displayName, 'Therm') and (scopes eq 'redmond' or id ge 'm')")
                .unwrap();
        assert!(e.matches(&dev("a", "Thermostat", false, &["redmond"])));
        assert!(e.matches(&dev("z", "my thermostat", false, &[])));
        assert!(!e.matches(&dev("a", "Thermostat", false, &[])));
        assert!(!e.matches(&dev("z", "Lamp", false, &["redmond"])));
        assert!(parse_filter("enabled ne false")
            .unwrap()
            .matches(&dev("a", "b", false, &[])));
    }

    #[test]
    fn bad_queries_are_refused_with_a_message() {
        for bad in [
            "",
            "enabled eq 'yes'",
            "enabled lt true",
            "color eq 'red'",
            "id eq",
            "id == 'a'",
            "(id eq 'a'",
            "id eq 'a' extra",
            "contains(id, 'a')",
            "startswith(displayName, 'a')",
            "scopes gt 'a'",
            "id eq 'unterminated",
        ] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
        for bad in [
            "SELECT id FROM devices",
            "SELECT * FROM dtmi:a:b;1",
            "SELECT * FROM devices WHERE $temperature > \"3\"",
            "SELECT * FROM devices WHERE $provisioned = \"yes\"",
            "SELECT * FROM devices WHERE",
            "DELETE FROM devices",
        ] {
            assert!(parse_group_query(bad).is_err(), "{bad}");
        }
        let deep = format!("{}id eq 'a'{}", "(".repeat(500), ")".repeat(500));
        assert!(parse_filter(&deep).is_err());
    }

    #[test]
    fn orderby() {
        assert_eq!(parse_orderby("displayName desc"), Ok(true));
        assert_eq!(parse_orderby("displayName"), Ok(false));
        assert!(parse_orderby("id").is_err());
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parsers_never_panic(s in ".{0,200}") {
            let _ = parse_filter(&s);
            let _ = parse_group_query(&s);
            let _ = parse_group_query(&format!("SELECT * FROM devices WHERE {s}"));
            let _ = parse_orderby(&s);
        }

        #[test]
        fn token_soup_never_panics(parts in proptest::collection::vec(
            prop_oneof![
                Just("("), Just(")"), Just(","), Just("and"), Just("or"), Just("AND"), Just("eq"),
                Just("="), Just("!="), Just("<="), Just("'x'"), Just("\"y\""), Just("true"),
                Just("$template"), Just("displayName"), Just("contains"), Just("scopes"), Just("*"),
            ],
            0..30,
        )) {
            let s = parts.join(" ");
            let _ = parse_filter(&s);
            let _ = parse_group_query(&format!("SELECT * FROM devices WHERE {s}"));
        }
    }
}
