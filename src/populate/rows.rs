//! How one generated row is spelled for the server that loads it: a `COPY` text line for
//! PostgreSQL, a tuple of a multi-row `INSERT … VALUES` for MariaDB. The generators write fields
//! through [`Row`], so both loaders get the same values from the same code.

use std::fmt;
use std::io::Write as _;

use uuid::Uuid;

/// The spelling of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RowFormat {
    /// `COPY … FROM STDIN` text format: tab-separated fields, one line per row.
    CopyText,
    /// `(…, …)` tuples after an `INSERT … VALUES `, comma-separated; an id is a hex literal, since
    /// MariaDB keeps order ids as `BINARY(16)`.
    SqlValues,
}

/// One row being appended to `out`; [`Row::end`] closes it.
pub(super) struct Row<'a> {
    out: &'a mut Vec<u8>,
    format: RowFormat,
    fields: usize,
}

impl<'a> Row<'a> {
    /// Starts a row after whatever `out` holds: a `COPY` chunk, or an `INSERT` statement whose
    /// earlier tuples (each ending in `)`) it follows with a comma.
    pub(super) fn start(out: &'a mut Vec<u8>, format: RowFormat) -> Self {
        if format == RowFormat::SqlValues {
            if out.last() == Some(&b')') {
                out.push(b',');
            }
            out.push(b'(');
        }
        Self { out, format, fields: 0 }
    }

    fn separate(&mut self) {
        if self.fields > 0 {
            self.out.push(match self.format {
                RowFormat::CopyText => b'\t',
                RowFormat::SqlValues => b',',
            });
        }
        self.fields += 1;
    }

    pub(super) fn number(mut self, value: impl fmt::Display) -> Self {
        self.separate();
        write!(self.out, "{value}").expect("writing to a Vec cannot fail");
        self
    }

    /// Text the generators make: digits, ASCII letters, spaces and `,+-@.`, which `COPY` takes
    /// literally and a quoted SQL string holds without escapes.
    pub(super) fn text(mut self, value: fmt::Arguments<'_>) -> Self {
        self.separate();
        let quoted = self.format == RowFormat::SqlValues;
        if quoted {
            self.out.push(b'\'');
        }
        self.out.write_fmt(value).expect("writing to a Vec cannot fail");
        if quoted {
            self.out.push(b'\'');
        }
        self
    }

    pub(super) fn id(mut self, id: Uuid) -> Self {
        self.separate();
        match self.format {
            RowFormat::CopyText => write!(self.out, "{id}"),
            RowFormat::SqlValues => write!(self.out, "X'{}'", id.simple()),
        }
        .expect("writing to a Vec cannot fail");
        self
    }

    pub(super) fn end(self) {
        self.out.push(match self.format {
            RowFormat::CopyText => b'\n',
            RowFormat::SqlValues => b')',
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_rows(format: RowFormat) -> String {
        let id = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let mut out = b"INSERT INTO t VALUES ".to_vec();
        if format == RowFormat::CopyText {
            out.clear();
        }
        Row::start(&mut out, format).id(id).number(7).text(format_args!("a b, {}", 3)).end();
        Row::start(&mut out, format).number(-1).end();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn copy_rows_are_tab_separated_lines() {
        assert_eq!(two_rows(RowFormat::CopyText), "01234567-89ab-cdef-0123-456789abcdef\t7\ta b, 3\n-1\n");
    }

    #[test]
    fn sql_rows_are_comma_separated_tuples_with_binary_ids() {
        assert_eq!(
            two_rows(RowFormat::SqlValues),
            "INSERT INTO t VALUES (X'0123456789abcdef0123456789abcdef',7,'a b, 3'),(-1)"
        );
    }
}
