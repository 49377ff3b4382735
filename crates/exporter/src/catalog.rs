//! Iceberg's SQL catalog, kept in `metadata.iceberg_tables` by the service's own PostgreSQL.
//!
//! A run stages its table commits here (metadata files written, pointers held in memory) and
//! moves the pointers in the same PostgreSQL transaction as its position and control totals,
//! so a run either lands whole or leaves only files nothing points to.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use iceberg::io::FileIO;
use iceberg::spec::{TableMetadata, TableMetadataBuilder};
use iceberg::table::Table;
use iceberg::{
    Catalog, Error, ErrorKind, MetadataLocation, Namespace, NamespaceIdent, Result, TableCommit,
    TableCreation, TableIdent,
};
use sqlx::PgConnection;

use crate::columns;
use crate::tables::LakeTable;
use crate::Failure;

pub const NAMESPACE: &str = "lakehouse";

/// A table as this run found it, and where its metadata was.
pub struct Found {
    pub table: Table,
    /// None when this run creates the table.
    pub previous_location: Option<String>,
}

pub async fn load_or_create(
    conn: &mut PgConnection,
    catalog: &str,
    warehouse: &str,
    file_io: &FileIO,
    lake_table: &LakeTable,
) -> std::result::Result<Found, Failure> {
    let ident = TableIdent::from_strs([NAMESPACE, lake_table.name])?;
    let location: Option<String> = sqlx::query_scalar(
        "SELECT metadata_location FROM metadata.iceberg_tables
         WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3",
    )
    .bind(catalog)
    .bind(NAMESPACE)
    .bind(lake_table.name)
    .fetch_optional(&mut *conn)
    .await?
    .flatten();
    if let Some(location) = location {
        let metadata = TableMetadata::read_from(file_io, &location).await?;
        let schema = columns::schema(lake_table.columns)?;
        if metadata.current_schema().as_struct() != schema.as_struct() {
            return Err(Failure::Config(format!(
                "lake table {} has other columns than the exporter writes: evolve its schema first",
                lake_table.name
            )));
        }
        let table = Table::builder()
            .file_io(file_io.clone())
            .metadata_location(location.clone())
            .metadata(metadata)
            .identifier(ident)
            .build()?;
        return Ok(Found {
            table,
            previous_location: Some(location),
        });
    }
    let table_location = format!(
        "{}/{NAMESPACE}/{}",
        warehouse.trim_end_matches('/'),
        lake_table.name
    );
    let creation = TableCreation::builder()
        .name(lake_table.name.to_owned())
        .location(table_location.clone())
        .schema(columns::schema(lake_table.columns)?)
        .properties([(
            "write.parquet.compression-codec".to_owned(),
            "zstd".to_owned(),
        )])
        .build();
    let metadata = TableMetadataBuilder::from_table_creation(creation)?
        .build()?
        .metadata;
    let location = MetadataLocation::new_with_table_location(table_location).to_string();
    metadata.write_to(file_io, &location).await?;
    let table = Table::builder()
        .file_io(file_io.clone())
        .metadata_location(location)
        .metadata(metadata)
        .identifier(ident)
        .build()?;
    Ok(Found {
        table,
        previous_location: None,
    })
}

/// The catalog a run's Iceberg transactions commit to: it writes each new metadata file and
/// keeps the table, for the run to point the SQL catalog at it when everything else is done.
#[derive(Debug, Default)]
pub struct Staged {
    tables: Mutex<HashMap<TableIdent, Table>>,
}

impl Staged {
    pub fn hold(&self, table: Table) -> Result<()> {
        self.lock()?.insert(table.identifier().clone(), table);
        Ok(())
    }

    pub fn get(&self, ident: &TableIdent) -> Result<Table> {
        self.lock()?
            .get(ident)
            .cloned()
            .ok_or_else(|| Error::new(ErrorKind::TableNotFound, format!("{ident} is not staged")))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<TableIdent, Table>>> {
        self.tables
            .lock()
            .map_err(|_| Error::new(ErrorKind::Unexpected, "the staged tables' lock is poisoned"))
    }
}

fn unsupported<T>(what: &str) -> Result<T> {
    Err(Error::new(
        ErrorKind::FeatureUnsupported,
        format!("the export's catalog does not {what}"),
    ))
}

#[async_trait]
impl Catalog for Staged {
    async fn list_namespaces(&self, _: Option<&NamespaceIdent>) -> Result<Vec<NamespaceIdent>> {
        unsupported("list namespaces")
    }
    async fn create_namespace(
        &self,
        _: &NamespaceIdent,
        _: HashMap<String, String>,
    ) -> Result<Namespace> {
        unsupported("create namespaces")
    }
    async fn get_namespace(&self, _: &NamespaceIdent) -> Result<Namespace> {
        unsupported("read namespaces")
    }
    async fn namespace_exists(&self, _: &NamespaceIdent) -> Result<bool> {
        unsupported("read namespaces")
    }
    async fn update_namespace(&self, _: &NamespaceIdent, _: HashMap<String, String>) -> Result<()> {
        unsupported("update namespaces")
    }
    async fn drop_namespace(&self, _: &NamespaceIdent) -> Result<()> {
        unsupported("drop namespaces")
    }
    async fn list_tables(&self, _: &NamespaceIdent) -> Result<Vec<TableIdent>> {
        unsupported("list tables")
    }
    async fn create_table(&self, _: &NamespaceIdent, _: TableCreation) -> Result<Table> {
        unsupported("create tables through the trait")
    }
    async fn load_table(&self, ident: &TableIdent) -> Result<Table> {
        self.get(ident)
    }
    async fn drop_table(&self, _: &TableIdent) -> Result<()> {
        unsupported("drop tables")
    }
    async fn table_exists(&self, ident: &TableIdent) -> Result<bool> {
        Ok(self.lock()?.contains_key(ident))
    }
    async fn rename_table(&self, _: &TableIdent, _: &TableIdent) -> Result<()> {
        unsupported("rename tables")
    }
    async fn register_table(&self, _: &TableIdent, _: String) -> Result<Table> {
        unsupported("register tables")
    }
    async fn update_table(&self, commit: TableCommit) -> Result<Table> {
        let current = self.get(commit.identifier())?;
        let staged = commit.apply(current)?;
        staged
            .metadata()
            .write_to(staged.file_io(), staged.metadata_location_result()?)
            .await?;
        self.hold(staged.clone())?;
        Ok(staged)
    }
}
