//! The recursive-descent parser: tokens into a [`Statement`], recording each bind marker's
//! name as it goes. It is one file because its functions call one another and share one
//! cursor over the tokens: split, every part would need all the others.

use super::lex::Token;
use super::{
    CreateTable, InValues, Literal, Operand, Operator, Parsed, Relation, Select, Selector,
    Statement, TableName, Term, Using,
};
use crate::error::{unsupported, CqlError};

/// Parses one statement from its tokens (a trailing `;` is allowed).
pub(super) fn statement(tokens: Vec<Token>) -> Result<Parsed, CqlError> {
    let mut parser = Parser {
        tokens,
        at: 0,
        markers: Vec::new(),
    };
    let statement = parser.statement()?;
    parser.eat_symbol(";");
    if parser.at != parser.tokens.len() {
        return Err(CqlError::Syntax(format!(
            "unexpected {:?} after the statement",
            parser.tokens[parser.at]
        )));
    }
    Ok(Parsed {
        statement,
        markers: parser.markers,
    })
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    markers: Vec<Option<String>>,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn peek_word(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w == word)
    }

    fn eat_word(&mut self, word: &str) -> bool {
        if self.peek_word(word) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn eat_symbol(&mut self, symbol: &str) -> bool {
        if matches!(self.peek(), Some(Token::Symbol(s)) if *s == symbol) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expected(&self, what: &str) -> CqlError {
        match self.peek() {
            Some(token) => CqlError::Syntax(format!("expected {what}, found {token:?}")),
            None => CqlError::Syntax(format!("expected {what} at the end of the statement")),
        }
    }

    fn word(&mut self, word: &str) -> Result<(), CqlError> {
        if self.eat_word(word) {
            Ok(())
        } else {
            Err(self.expected(&word.to_ascii_uppercase()))
        }
    }

    fn symbol(&mut self, symbol: &str) -> Result<(), CqlError> {
        if self.eat_symbol(symbol) {
            Ok(())
        } else {
            Err(self.expected(&format!("'{symbol}'")))
        }
    }

    fn identifier(&mut self) -> Result<String, CqlError> {
        match self.peek().cloned() {
            Some(Token::Word(w) | Token::Quoted(w)) => {
                self.at += 1;
                Ok(w)
            }
            _ => Err(self.expected("an identifier")),
        }
    }

    fn table_name(&mut self) -> Result<TableName, CqlError> {
        let first = self.identifier()?;
        if self.eat_symbol(".") {
            Ok(TableName {
                keyspace: Some(first),
                name: self.identifier()?,
            })
        } else {
            Ok(TableName {
                keyspace: None,
                name: first,
            })
        }
    }

    fn if_not_exists(&mut self) -> Result<bool, CqlError> {
        if self.eat_word("if") {
            self.word("not")?;
            self.word("exists")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn if_exists(&mut self) -> Result<bool, CqlError> {
        if self.eat_word("if") {
            self.word("exists")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn statement(&mut self) -> Result<Statement, CqlError> {
        let Some(Token::Word(first)) = self.peek().cloned() else {
            return Err(self.expected("a statement"));
        };
        self.at += 1;
        match first.as_str() {
            "select" => self.select().map(Statement::Select),
            "insert" => self.insert(),
            "update" => self.update(),
            "delete" => self.delete(),
            "create" => self.create(),
            "alter" => self.alter(),
            "drop" => self.drop(),
            "truncate" => {
                self.eat_word("table");
                Ok(Statement::Truncate(self.table_name()?))
            }
            "use" => Ok(Statement::Use(self.identifier()?)),
            "begin" => Err(unsupported(
                "BATCH in the query text (send a protocol BATCH message instead)",
            )),
            other => Err(unsupported(&format!(
                "the {} statement",
                other.to_uppercase()
            ))),
        }
    }

    fn create(&mut self) -> Result<Statement, CqlError> {
        if self.eat_word("keyspace") {
            let if_not_exists = self.if_not_exists()?;
            let name = self.identifier()?;
            self.word("with")?;
            let mut replication = Vec::new();
            let mut durable_writes = true;
            loop {
                let option = self.identifier()?;
                self.symbol("=")?;
                let value = self.literal()?;
                match (option.as_str(), value) {
                    ("replication", Literal::Map(pairs)) => {
                        for (k, v) in pairs {
                            replication.push((literal_text(&k)?, literal_text(&v)?));
                        }
                    }
                    ("durable_writes", Literal::Boolean(b)) => durable_writes = b,
                    (other, _) => {
                        return Err(CqlError::Syntax(format!("bad keyspace option {other}")))
                    }
                }
                if !self.eat_word("and") {
                    break;
                }
            }
            if !replication.iter().any(|(k, _)| k == "class") {
                return Err(CqlError::Invalid(
                    "replication needs a 'class' (SimpleStrategy or NetworkTopologyStrategy)"
                        .into(),
                ));
            }
            return Ok(Statement::CreateKeyspace {
                name,
                if_not_exists,
                replication,
                durable_writes,
            });
        }
        if self.eat_word("table") || self.eat_word("columnfamily") {
            return self.create_table().map(Statement::CreateTable);
        }
        Err(unsupported(
            "CREATE of anything but KEYSPACE and TABLE (no indexes, views, types or functions)",
        ))
    }

    fn type_name(&mut self) -> Result<String, CqlError> {
        let mut name = self.identifier()?;
        if self.eat_symbol("<") {
            name.push('<');
            let mut depth = 1;
            while depth > 0 {
                match self.peek().cloned() {
                    Some(Token::Symbol("<")) => {
                        depth += 1;
                        name.push('<');
                    }
                    Some(Token::Symbol(">")) => {
                        depth -= 1;
                        name.push('>');
                    }
                    Some(Token::Symbol(",")) => name.push_str(", "),
                    Some(Token::Word(w)) => name.push_str(&w),
                    _ => return Err(self.expected("a type")),
                }
                self.at += 1;
            }
        }
        Ok(name)
    }

    fn create_table(&mut self) -> Result<CreateTable, CqlError> {
        let if_not_exists = self.if_not_exists()?;
        let table = self.table_name()?;
        self.symbol("(")?;
        let mut columns = Vec::new();
        let mut partition_key = Vec::new();
        let mut clustering = Vec::new();
        loop {
            if self.eat_word("primary") {
                self.word("key")?;
                self.symbol("(")?;
                if self.eat_symbol("(") {
                    partition_key.push(self.identifier()?);
                    while self.eat_symbol(",") {
                        partition_key.push(self.identifier()?);
                    }
                    self.symbol(")")?;
                } else {
                    partition_key.push(self.identifier()?);
                }
                while self.eat_symbol(",") {
                    clustering.push(self.identifier()?);
                }
                self.symbol(")")?;
            } else {
                let name = self.identifier()?;
                let ty = self.type_name()?;
                if self.eat_word("static") {
                    return Err(unsupported("static columns"));
                }
                if self.eat_word("primary") {
                    self.word("key")?;
                    partition_key.push(name.clone());
                }
                columns.push((name, ty));
            }
            if !self.eat_symbol(",") {
                break;
            }
            if self.eat_symbol(")") {
                self.at -= 1;
                break;
            }
        }
        self.symbol(")")?;
        let mut clustering_order = Vec::new();
        let mut options = Vec::new();
        if self.eat_word("with") {
            loop {
                if self.eat_word("clustering") {
                    self.word("order")?;
                    self.word("by")?;
                    self.symbol("(")?;
                    loop {
                        let column = self.identifier()?;
                        let descending = self.order()?;
                        clustering_order.push((column, descending));
                        if !self.eat_symbol(",") {
                            break;
                        }
                    }
                    self.symbol(")")?;
                } else if self.eat_word("compact") {
                    return Err(unsupported("COMPACT STORAGE"));
                } else {
                    let option = self.identifier()?;
                    self.symbol("=")?;
                    options.push((option, self.literal()?));
                }
                if !self.eat_word("and") {
                    break;
                }
            }
        }
        Ok(CreateTable {
            table,
            if_not_exists,
            columns,
            partition_key,
            clustering,
            clustering_order,
            options,
        })
    }

    fn order(&mut self) -> Result<bool, CqlError> {
        if self.eat_word("desc") {
            Ok(true)
        } else {
            self.eat_word("asc");
            Ok(false)
        }
    }

    fn alter(&mut self) -> Result<Statement, CqlError> {
        self.word("table")
            .map_err(|_| unsupported("ALTER of anything but TABLE"))?;
        let table = self.table_name()?;
        if self.eat_word("add") {
            let parenthesised = self.eat_symbol("(");
            let mut columns = Vec::new();
            loop {
                let name = self.identifier()?;
                columns.push((name, self.type_name()?));
                if !parenthesised || !self.eat_symbol(",") {
                    break;
                }
            }
            if parenthesised {
                self.symbol(")")?;
            }
            return Ok(Statement::AlterTableAdd { table, columns });
        }
        if self.eat_word("with") {
            let mut options = Vec::new();
            loop {
                let option = self.identifier()?;
                self.symbol("=")?;
                options.push((option, self.literal()?));
                if !self.eat_word("and") {
                    break;
                }
            }
            return Ok(Statement::AlterTableWith { table, options });
        }
        Err(unsupported("ALTER TABLE other than ADD and WITH"))
    }

    fn drop(&mut self) -> Result<Statement, CqlError> {
        if self.eat_word("keyspace") {
            let if_exists = self.if_exists()?;
            return Ok(Statement::DropKeyspace {
                if_exists,
                name: self.identifier()?,
            });
        }
        if self.eat_word("table") {
            let if_exists = self.if_exists()?;
            return Ok(Statement::DropTable {
                if_exists,
                table: self.table_name()?,
            });
        }
        Err(unsupported("DROP of anything but KEYSPACE and TABLE"))
    }

    fn marker(&mut self, name: Option<String>) -> usize {
        self.markers.push(name);
        self.markers.len() - 1
    }

    fn term(&mut self) -> Result<Term, CqlError> {
        if let Some(Token::Marker(name)) = self.peek().cloned() {
            self.at += 1;
            return Ok(Term::Bind(self.marker(name)));
        }
        Ok(Term::Literal(self.literal()?))
    }

    fn literal(&mut self) -> Result<Literal, CqlError> {
        let token = self
            .peek()
            .cloned()
            .ok_or_else(|| self.expected("a value"))?;
        self.at += 1;
        Ok(match token {
            Token::Str(s) => Literal::String(s),
            Token::Integer(n) => Literal::Integer(n),
            Token::Float(f) => Literal::Float(f),
            Token::Blob(b) => Literal::Blob(b),
            Token::Uuid(u) => Literal::Uuid(u),
            Token::Word(w) if w == "true" => Literal::Boolean(true),
            Token::Word(w) if w == "false" => Literal::Boolean(false),
            Token::Word(w) if w == "null" => Literal::Null,
            Token::Symbol("[") => {
                let items = self.literal_list("]")?;
                Literal::Collection(items)
            }
            Token::Symbol("{") => {
                if self.eat_symbol("}") {
                    return Ok(Literal::Map(Vec::new()));
                }
                let first = self.literal()?;
                if self.colon() {
                    let mut pairs = vec![(first, self.literal()?)];
                    while self.eat_symbol(",") {
                        let key = self.literal()?;
                        if !self.colon() {
                            return Err(self.expected("':'"));
                        }
                        pairs.push((key, self.literal()?));
                    }
                    self.symbol("}")?;
                    Literal::Map(pairs)
                } else {
                    let mut items = vec![first];
                    while self.eat_symbol(",") {
                        items.push(self.literal()?);
                    }
                    self.symbol("}")?;
                    Literal::Collection(items)
                }
            }
            _ => {
                self.at -= 1;
                return Err(self.expected("a value"));
            }
        })
    }

    /// A `:` between a map's key and value; the lexer reads `: v` as a named marker when a
    /// word follows, so both forms are taken here.
    fn colon(&mut self) -> bool {
        match self.peek().cloned() {
            Some(Token::Marker(Some(name))) => {
                // `{'a':b}` is not valid CQL (values are literals), but `'a':true`-style
                // words are: put the word back as a token.
                self.tokens[self.at] = Token::Word(name);
                true
            }
            Some(Token::Symbol(":")) => {
                self.at += 1;
                true
            }
            _ => false,
        }
    }

    fn literal_list(&mut self, close: &str) -> Result<Vec<Literal>, CqlError> {
        let mut items = Vec::new();
        if self.eat_symbol(close) {
            return Ok(items);
        }
        loop {
            items.push(self.literal()?);
            if !self.eat_symbol(",") {
                break;
            }
        }
        self.symbol(close)?;
        Ok(items)
    }

    fn using(&mut self) -> Result<Using, CqlError> {
        let mut using = Using::default();
        if !self.eat_word("using") {
            return Ok(using);
        }
        loop {
            if self.eat_word("ttl") {
                using.ttl = Some(self.named_term("[ttl]")?);
            } else if self.eat_word("timestamp") {
                using.timestamp = Some(self.named_term("[timestamp]")?);
            } else {
                return Err(self.expected("TTL or TIMESTAMP"));
            }
            if !self.eat_word("and") {
                break;
            }
        }
        Ok(using)
    }

    /// A term whose `?` marker gets `name` (what Cassandra calls `[ttl]`, `[limit]`, …).
    fn named_term(&mut self, name: &str) -> Result<Term, CqlError> {
        let term = self.term()?;
        if let Term::Bind(i) = term {
            if self.markers[i].is_none() {
                self.markers[i] = Some(name.to_string());
            }
        }
        Ok(term)
    }

    fn insert(&mut self) -> Result<Statement, CqlError> {
        self.word("into")?;
        let table = self.table_name()?;
        if self.peek_word("json") {
            return Err(unsupported("INSERT JSON"));
        }
        self.symbol("(")?;
        let mut columns = vec![self.identifier()?];
        while self.eat_symbol(",") {
            columns.push(self.identifier()?);
        }
        self.symbol(")")?;
        self.word("values")?;
        self.symbol("(")?;
        let mut values = vec![self.term()?];
        while self.eat_symbol(",") {
            values.push(self.term()?);
        }
        self.symbol(")")?;
        if columns.len() != values.len() {
            return Err(CqlError::Invalid(
                "INSERT names a different number of columns and values".into(),
            ));
        }
        if self.peek_word("if") {
            return Err(unsupported("lightweight transactions (IF NOT EXISTS)"));
        }
        let using = self.using()?;
        Ok(Statement::Insert {
            table,
            columns,
            values,
            using,
        })
    }

    fn update(&mut self) -> Result<Statement, CqlError> {
        let table = self.table_name()?;
        let using = self.using()?;
        self.word("set")?;
        let mut assignments = Vec::new();
        loop {
            let column = self.identifier()?;
            self.symbol("=")?;
            assignments.push((column, self.term()?));
            if !self.eat_symbol(",") {
                break;
            }
        }
        let relations = self.where_clause()?;
        if self.peek_word("if") {
            return Err(unsupported("lightweight transactions (IF)"));
        }
        Ok(Statement::Update {
            table,
            using,
            assignments,
            relations,
        })
    }

    fn delete(&mut self) -> Result<Statement, CqlError> {
        let mut columns = Vec::new();
        if !self.peek_word("from") {
            loop {
                columns.push(self.identifier()?);
                if !self.eat_symbol(",") {
                    break;
                }
            }
        }
        self.word("from")?;
        let table = self.table_name()?;
        let using = self.using()?;
        if using.ttl.is_some() {
            return Err(CqlError::Invalid("DELETE cannot have a TTL".into()));
        }
        let relations = self.where_clause()?;
        if self.peek_word("if") {
            return Err(unsupported("lightweight transactions (IF)"));
        }
        Ok(Statement::Delete {
            columns,
            table,
            using,
            relations,
        })
    }

    fn where_clause(&mut self) -> Result<Vec<Relation>, CqlError> {
        let mut relations = Vec::new();
        if !self.eat_word("where") {
            return Ok(relations);
        }
        loop {
            relations.push(self.relation()?);
            if !self.eat_word("and") {
                break;
            }
        }
        Ok(relations)
    }

    fn operator(&mut self) -> Result<Operator, CqlError> {
        for (symbol, operator) in [
            ("=", Operator::Eq),
            ("<=", Operator::Le),
            (">=", Operator::Ge),
            ("<", Operator::Lt),
            (">", Operator::Gt),
        ] {
            if self.eat_symbol(symbol) {
                return Ok(operator);
            }
        }
        if self.eat_symbol("!=") || self.peek_word("contains") || self.peek_word("like") {
            return Err(unsupported("!=, CONTAINS and LIKE"));
        }
        Err(self.expected("a comparison"))
    }

    fn relation(&mut self) -> Result<Relation, CqlError> {
        if self.eat_symbol("(") {
            let mut columns = vec![self.identifier()?];
            while self.eat_symbol(",") {
                columns.push(self.identifier()?);
            }
            self.symbol(")")?;
            let operator = self.operator()?;
            self.symbol("(")?;
            let mut terms = vec![self.term()?];
            while self.eat_symbol(",") {
                terms.push(self.term()?);
            }
            self.symbol(")")?;
            if terms.len() != columns.len() {
                return Err(CqlError::Invalid(
                    "a tuple relation needs as many values as columns".into(),
                ));
            }
            return Ok(Relation {
                columns,
                operator,
                operand: Operand::Tuple(terms),
            });
        }
        if self.peek_word("token") {
            return Err(unsupported("token() relations"));
        }
        let column = self.identifier()?;
        if self.eat_word("in") {
            let values = if let Some(Token::Marker(name)) = self.peek().cloned() {
                self.at += 1;
                let name = name.or_else(|| Some(format!("in({column})")));
                InValues::Bound(self.marker(name))
            } else {
                self.symbol("(")?;
                let mut terms = vec![self.term()?];
                while self.eat_symbol(",") {
                    terms.push(self.term()?);
                }
                self.symbol(")")?;
                InValues::Listed(terms)
            };
            return Ok(Relation {
                columns: vec![column],
                operator: Operator::Eq,
                operand: Operand::In(values),
            });
        }
        let operator = self.operator()?;
        let term = self.term()?;
        Ok(Relation {
            columns: vec![column],
            operator,
            operand: Operand::Single(term),
        })
    }

    fn selector(&mut self) -> Result<Selector, CqlError> {
        let name = self.identifier()?;
        if self.eat_symbol("(") {
            let selector = match name.as_str() {
                "writetime" => Selector::WriteTime(self.identifier()?),
                "ttl" => Selector::Ttl(self.identifier()?),
                "count" => {
                    if !self.eat_symbol("*") {
                        self.identifier()?;
                    }
                    Selector::Count
                }
                other => return Err(unsupported(&format!("the function {other}()"))),
            };
            self.symbol(")")?;
            return Ok(selector);
        }
        Ok(Selector::Column(name))
    }

    fn select(&mut self) -> Result<Select, CqlError> {
        if self.eat_word("json") || self.eat_word("distinct") {
            return Err(unsupported("SELECT JSON and SELECT DISTINCT"));
        }
        let selectors = if self.eat_symbol("*") {
            None
        } else {
            let mut selectors = vec![self.selector()?];
            while self.eat_symbol(",") {
                selectors.push(self.selector()?);
            }
            if self.peek_word("as") {
                return Err(unsupported("selector aliases"));
            }
            Some(selectors)
        };
        self.word("from")?;
        let table = self.table_name()?;
        let relations = self.where_clause()?;
        if self.peek_word("group") {
            return Err(unsupported("GROUP BY"));
        }
        let mut order_by = Vec::new();
        if self.eat_word("order") {
            self.word("by")?;
            loop {
                let column = self.identifier()?;
                order_by.push((column, self.order()?));
                if !self.eat_symbol(",") {
                    break;
                }
            }
        }
        if self.peek_word("per") {
            return Err(unsupported("PER PARTITION LIMIT"));
        }
        let limit = if self.eat_word("limit") {
            Some(self.named_term("[limit]")?)
        } else {
            None
        };
        if self.eat_word("allow") {
            self.word("filtering")?;
            return Err(unsupported("ALLOW FILTERING"));
        }
        Ok(Select {
            selectors,
            table,
            relations,
            order_by,
            limit,
        })
    }
}

fn literal_text(literal: &Literal) -> Result<String, CqlError> {
    match literal {
        Literal::String(s) => Ok(s.clone()),
        Literal::Integer(n) => Ok(n.to_string()),
        Literal::Boolean(b) => Ok(b.to_string()),
        other => Err(CqlError::Invalid(format!(
            "expected a text or number, found {other:?}"
        ))),
    }
}
