//! A lake column: its Iceberg type, and how a PostgreSQL value becomes an Arrow value.

use std::sync::Arc;

use arrow_array::builder::{
    Date32Builder, Decimal128Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::ArrayRef;
use chrono::{DateTime, NaiveDate, Utc};
use iceberg::spec::{NestedField, PrimitiveType, Schema, Type};
use rust_decimal::Decimal;
use sqlx::postgres::PgRow;
use sqlx::Row;

use crate::tokens::Tokens;
use crate::Failure;

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Text,
    /// A customer id or a login subject, written as its keyed token.
    Token,
    Int,
    Long,
    Date,
    Timestamp,
    /// numeric(15,2): đồng amounts.
    Money,
    /// numeric(5,4): annual interest rates.
    Rate,
}

#[derive(Clone, Copy, Debug)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
}

pub const fn required(name: &'static str, kind: Kind) -> Column {
    Column {
        name,
        kind,
        required: true,
    }
}

pub const fn optional(name: &'static str, kind: Kind) -> Column {
    Column {
        name,
        kind,
        required: false,
    }
}

impl Kind {
    fn iceberg(self) -> Type {
        Type::Primitive(match self {
            Kind::Text | Kind::Token => PrimitiveType::String,
            Kind::Int => PrimitiveType::Int,
            Kind::Long => PrimitiveType::Long,
            Kind::Date => PrimitiveType::Date,
            Kind::Timestamp => PrimitiveType::Timestamptz,
            Kind::Money => PrimitiveType::Decimal {
                precision: 15,
                scale: 2,
            },
            Kind::Rate => PrimitiveType::Decimal {
                precision: 5,
                scale: 4,
            },
        })
    }
}

/// The Iceberg schema of a column list: field ids 1, 2, … in order.
pub fn schema(columns: &[Column]) -> Result<Schema, Failure> {
    let fields = columns.iter().zip(1..).map(|(column, id)| {
        let field = if column.required {
            NestedField::required(id, column.name, column.kind.iceberg())
        } else {
            NestedField::optional(id, column.name, column.kind.iceberg())
        };
        Arc::new(field)
    });
    Ok(Schema::builder().with_fields(fields).build()?)
}

/// One column's values for the batch being built.
pub enum Builder {
    Text(StringBuilder),
    Int(Int32Builder),
    Long(Int64Builder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Decimal(Decimal128Builder, u32),
}

/// Day 0 of Arrow's and Iceberg's dates.
pub const EPOCH: NaiveDate = match NaiveDate::from_ymd_opt(1970, 1, 1) {
    Some(date) => date,
    None => panic!("1970-01-01 is a date"),
};

impl Builder {
    pub fn new(kind: Kind) -> Result<Self, Failure> {
        Ok(match kind {
            Kind::Text | Kind::Token => Builder::Text(StringBuilder::new()),
            Kind::Int => Builder::Int(Int32Builder::new()),
            Kind::Long => Builder::Long(Int64Builder::new()),
            Kind::Date => Builder::Date(Date32Builder::new()),
            Kind::Timestamp => Builder::Timestamp(
                TimestampMicrosecondBuilder::new().with_timezone(iceberg::arrow::UTC_TIME_ZONE),
            ),
            Kind::Money => {
                Builder::Decimal(Decimal128Builder::new().with_precision_and_scale(15, 2)?, 2)
            }
            Kind::Rate => {
                Builder::Decimal(Decimal128Builder::new().with_precision_and_scale(5, 4)?, 4)
            }
        })
    }

    /// Appends column `index` of `row`.
    pub fn push(
        &mut self,
        row: &PgRow,
        index: usize,
        kind: Kind,
        tokens: &Tokens,
    ) -> Result<(), Failure> {
        match self {
            Builder::Text(b) => {
                let value: Option<String> = row.try_get(index)?;
                match (kind, value) {
                    (Kind::Token, Some(v)) => b.append_value(tokens.token(&v)),
                    (_, v) => b.append_option(v),
                }
            }
            Builder::Int(b) => b.append_option(row.try_get::<Option<i32>, _>(index)?),
            Builder::Long(b) => b.append_option(row.try_get::<Option<i64>, _>(index)?),
            Builder::Date(b) => {
                let value: Option<NaiveDate> = row.try_get(index)?;
                b.append_option(value.map(|d| (d - EPOCH).num_days() as i32));
            }
            Builder::Timestamp(b) => {
                let value: Option<DateTime<Utc>> = row.try_get(index)?;
                b.append_option(value.map(|t| t.timestamp_micros()));
            }
            Builder::Decimal(b, scale) => {
                let value: Option<Decimal> = row.try_get(index)?;
                b.append_option(value.map(|mut d| {
                    d.rescale(*scale);
                    d.mantissa()
                }));
            }
        }
        Ok(())
    }

    pub fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Int(b) => Arc::new(b.finish()),
            Builder::Long(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Timestamp(b) => Arc::new(b.finish()),
            Builder::Decimal(b, _) => Arc::new(b.finish()),
        }
    }
}
