//! Cities (市州), counties (县市区), schools and venues.

use serde::Serialize;
use sqlx::Row;
use uuid::Uuid;

use super::rows;
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::store::Store;

/// A city or prefecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct City {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
}

/// A county or district.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct County {
    /// Its id.
    pub id: Uuid,
    /// The city it belongs to.
    pub city_id: Uuid,
    /// Its name.
    pub name: String,
}

/// A school.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct School {
    /// Its id.
    pub id: Uuid,
    /// The county it belongs to.
    pub county_id: Uuid,
    /// Its name.
    pub name: String,
}

/// A science venue (科普场所).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Venue {
    /// Its id.
    pub id: Uuid,
    /// The county it is in.
    pub county_id: Uuid,
    /// Its name.
    pub name: String,
    /// Its kind (science museum, education base, study-practice base, …).
    pub kind: String,
}

fn non_empty(name: &str, what: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(Error::InvalidInput(format!(
            "{what} name must have 1 to 200 characters"
        )));
    }
    Ok(name.to_owned())
}

impl Store {
    /// Creates a city (a no-op if `id` exists already).
    ///
    /// # Errors
    /// Empty name, name taken, or a database failure.
    pub async fn create_city(&self, id: Uuid, name: &str) -> Result<City> {
        let name = non_empty(name, "city")?;
        sqlx::query(
            "INSERT INTO cities (id, name, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id.to_string())
        .bind(&name)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(|e| Error::from(e).conflict_if_unique("a city with this name exists"))?;
        Ok(City { id, name })
    }

    /// Creates a county in a city (a no-op if `id` exists already).
    ///
    /// # Errors
    /// Unknown city, empty or taken name, or a database failure.
    pub async fn create_county(&self, id: Uuid, city_id: Uuid, name: &str) -> Result<County> {
        let name = non_empty(name, "county")?;
        self.require("cities", "city", city_id).await?;
        sqlx::query(
            "INSERT INTO counties (id, city_id, name, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id.to_string())
        .bind(city_id.to_string())
        .bind(&name)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(|e| Error::from(e).conflict_if_unique("this city has a county with this name"))?;
        Ok(County { id, city_id, name })
    }

    /// Creates a school in a county (a no-op if `id` exists already).
    ///
    /// # Errors
    /// Unknown county, empty or taken name, or a database failure.
    pub async fn create_school(&self, id: Uuid, county_id: Uuid, name: &str) -> Result<School> {
        let name = non_empty(name, "school")?;
        self.require("counties", "county", county_id).await?;
        sqlx::query(
            "INSERT INTO schools (id, county_id, name, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id.to_string())
        .bind(county_id.to_string())
        .bind(&name)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(|e| {
            Error::from(e).conflict_if_unique("this county has a school with this name")
        })?;
        Ok(School {
            id,
            county_id,
            name,
        })
    }

    /// Creates a venue in a county (a no-op if `id` exists already).
    ///
    /// # Errors
    /// Unknown county, empty or taken name, bad kind, or a database failure.
    pub async fn create_venue(
        &self,
        id: Uuid,
        county_id: Uuid,
        name: &str,
        kind: &str,
    ) -> Result<Venue> {
        let name = non_empty(name, "venue")?;
        let kind = kind.trim();
        if kind.is_empty()
            || kind.len() > 64
            || !kind.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            return Err(Error::InvalidInput(
                "venue kind must be lowercase letters and underscores".into(),
            ));
        }
        self.require("counties", "county", county_id).await?;
        sqlx::query(
            "INSERT INTO venues (id, county_id, name, kind, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id.to_string())
        .bind(county_id.to_string())
        .bind(&name)
        .bind(kind)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(|e| Error::from(e).conflict_if_unique("this county has a venue with this name"))?;
        Ok(Venue {
            id,
            county_id,
            name,
            kind: kind.to_owned(),
        })
    }

    /// Every venue, by name.
    ///
    /// # Errors
    /// A database failure.
    pub async fn list_venues(&self) -> Result<Vec<Venue>> {
        let rows = sqlx::query("SELECT id, county_id, name, kind FROM venues ORDER BY name, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Venue {
                    id: rows::uuid(row, "id", "venues")?,
                    county_id: rows::uuid(row, "county_id", "venues")?,
                    name: row.try_get("name")?,
                    kind: row.try_get("kind")?,
                })
            })
            .collect()
    }

    /// Every school's id.
    ///
    /// # Errors
    /// A database failure.
    pub async fn school_ids(&self) -> Result<Vec<Uuid>> {
        let rows = sqlx::query("SELECT id FROM schools ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| rows::uuid(row, "id", "schools"))
            .collect()
    }

    /// Looks up a school.
    ///
    /// # Errors
    /// A database failure.
    pub async fn school(&self, id: Uuid) -> Result<Option<School>> {
        let row = sqlx::query("SELECT id, county_id, name FROM schools WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(School {
                id: rows::uuid(&row, "id", "schools")?,
                county_id: rows::uuid(&row, "county_id", "schools")?,
                name: row.try_get("name")?,
            })
        })
        .transpose()
    }

    /// Fails with [`Error::NotFound`] unless `table` has a row with this id.
    pub(crate) async fn require(&self, table: &str, kind: &'static str, id: Uuid) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        require_row(&mut conn, table, kind, id).await
    }
}

/// Fails with [`Error::NotFound`] unless `table` has a row with this id.
pub(crate) async fn require_row(
    conn: &mut sqlx::AnyConnection,
    table: &str,
    kind: &'static str,
    id: Uuid,
) -> Result<()> {
    // `table` is always a literal from this crate, never input.
    let sql = format!("SELECT COUNT(*) AS n FROM {table} WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_one(&mut *conn)
        .await?;
    let n: i64 = row.try_get("n")?;
    if n == 0 {
        return Err(Error::not_found(kind, id));
    }
    Ok(())
}
