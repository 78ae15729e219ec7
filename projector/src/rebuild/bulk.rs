//! Writing a folded `ReadModel` into a schema, a few thousand rows a statement.
//! Runs on a connection whose search_path is the schema being built.

use sqlx::PgConnection;
use uuid::Uuid;

use super::model::ReadModel;

const CHUNK: usize = 5_000;

pub async fn write(connection: &mut PgConnection, model: &ReadModel) -> Result<(), sqlx::Error> {
    write_users(connection, model).await?;
    write_posts(connection, model).await?;
    write_comments(connection, model).await?;
    write_tags(connection, model).await?;
    write_versions(connection, model).await?;
    Ok(())
}

async fn write_users(connection: &mut PgConnection, model: &ReadModel) -> Result<(), sqlx::Error> {
    let users: Vec<_> = model.users.values().collect();
    for chunk in users.chunks(CHUNK) {
        sqlx::query!(
            r#"INSERT INTO users (id, handle, display_name, bio, email, role, active, post_count,
                                  comment_count, joined_at, updated_at, version)
               SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                    $7::bool[], $8::int4[], $9::int4[], $10::timestamptz[],
                                    $11::timestamptz[], $12::int4[])"#,
            &chunk.iter().map(|user| user.id).collect::<Vec<_>>(),
            &chunk.iter().map(|user| user.handle.clone()).collect::<Vec<_>>(),
            &chunk.iter().map(|user| user.display_name.clone()).collect::<Vec<_>>(),
            &chunk.iter().map(|user| user.bio.clone()).collect::<Vec<_>>() as &[Option<String>],
            &chunk.iter().map(|user| user.email.clone()).collect::<Vec<_>>(),
            &chunk.iter().map(|user| user.role.clone()).collect::<Vec<_>>(),
            &chunk.iter().map(|user| user.active).collect::<Vec<_>>(),
            &chunk.iter().map(|user| user.post_count).collect::<Vec<_>>(),
            &chunk.iter().map(|user| user.comment_count).collect::<Vec<_>>(),
            &chunk.iter().map(|user| user.joined_at).collect::<Vec<_>>(),
            &chunk.iter().map(|user| user.updated_at).collect::<Vec<_>>(),
            &chunk.iter().map(|user| user.version).collect::<Vec<_>>(),
        )
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

async fn write_posts(connection: &mut PgConnection, model: &ReadModel) -> Result<(), sqlx::Error> {
    let posts: Vec<_> = model.posts.values().collect();
    for chunk in posts.chunks(CHUNK) {
        sqlx::query!(
            r#"INSERT INTO posts (id, slug, title, body, excerpt, status, deleted, author_active, tags, author_id,
                                  author_handle, author_display_name, comment_count, created_at,
                                  updated_at, published_at, version)
               SELECT id, slug, title, body, excerpt, status, deleted, author_active,
                      -- Tags are [a-z0-9-]: a comma never occurs inside one.
                      CASE WHEN tags = '' THEN '{}'::text[] ELSE string_to_array(tags, ',') END,
                      author_id, author_handle, author_display_name, comment_count, created_at,
                      updated_at, published_at, version
               FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                           $7::bool[], $8::text[], $9::uuid[], $10::text[], $11::text[], $12::int4[],
                           $13::timestamptz[], $14::timestamptz[], $15::timestamptz[], $16::int4[],
                           $17::bool[])
                    AS new(id, slug, title, body, excerpt, status, deleted, tags, author_id,
                           author_handle, author_display_name, comment_count, created_at,
                           updated_at, published_at, version, author_active)"#,
            &chunk.iter().map(|post| post.id).collect::<Vec<_>>(),
            &chunk.iter().map(|post| post.slug.clone()).collect::<Vec<_>>(),
            &chunk.iter().map(|post| post.title.clone()).collect::<Vec<_>>(),
            &chunk.iter().map(|post| post.body.clone()).collect::<Vec<_>>(),
            &chunk.iter().map(|post| post.excerpt.clone()).collect::<Vec<_>>(),
            &chunk.iter().map(|post| post.status.to_owned()).collect::<Vec<_>>(),
            &chunk.iter().map(|post| post.deleted).collect::<Vec<_>>(),
            &chunk.iter().map(|post| post.tags.join(",")).collect::<Vec<_>>(),
            &chunk.iter().map(|post| post.author_id).collect::<Vec<_>>(),
            &chunk.iter().map(|post| post.author_handle.clone()).collect::<Vec<_>>(),
            &chunk.iter().map(|post| post.author_display_name.clone()).collect::<Vec<_>>(),
            &chunk.iter().map(|post| post.comment_count).collect::<Vec<_>>(),
            &chunk.iter().map(|post| post.created_at).collect::<Vec<_>>(),
            &chunk.iter().map(|post| post.updated_at).collect::<Vec<_>>(),
            &chunk.iter().map(|post| post.published_at).collect::<Vec<_>>() as &[Option<chrono::DateTime<chrono::Utc>>],
            &chunk.iter().map(|post| post.version).collect::<Vec<_>>(),
            &chunk.iter().map(|post| post.author_active).collect::<Vec<_>>(),
        )
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

async fn write_comments(
    connection: &mut PgConnection,
    model: &ReadModel,
) -> Result<(), sqlx::Error> {
    let comments: Vec<_> = model.comments.values().collect();
    for chunk in comments.chunks(CHUNK) {
        sqlx::query!(
            r#"INSERT INTO comments (id, post_id, author_id, parent_id, body, deleted, reply_count,
                                     created_at, edited_at, version)
               SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[],
                                    $6::bool[], $7::int4[], $8::timestamptz[], $9::timestamptz[],
                                    $10::int4[])"#,
            &chunk.iter().map(|comment| comment.id).collect::<Vec<_>>(),
            &chunk
                .iter()
                .map(|comment| comment.post_id)
                .collect::<Vec<_>>(),
            &chunk
                .iter()
                .map(|comment| comment.author_id)
                .collect::<Vec<_>>(),
            &chunk
                .iter()
                .map(|comment| comment.parent_id)
                .collect::<Vec<_>>() as &[Option<Uuid>],
            &chunk
                .iter()
                .map(|comment| comment.body.clone())
                .collect::<Vec<_>>(),
            &chunk
                .iter()
                .map(|comment| comment.deleted)
                .collect::<Vec<_>>(),
            &chunk
                .iter()
                .map(|comment| comment.reply_count)
                .collect::<Vec<_>>(),
            &chunk
                .iter()
                .map(|comment| comment.created_at)
                .collect::<Vec<_>>(),
            &chunk
                .iter()
                .map(|comment| comment.edited_at)
                .collect::<Vec<_>>() as &[Option<chrono::DateTime<chrono::Utc>>],
            &chunk
                .iter()
                .map(|comment| comment.version)
                .collect::<Vec<_>>(),
        )
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

async fn write_tags(connection: &mut PgConnection, model: &ReadModel) -> Result<(), sqlx::Error> {
    let (names, counts): (Vec<String>, Vec<i32>) = model
        .tags
        .iter()
        .map(|(name, count)| (name.clone(), *count))
        .unzip();
    sqlx::query!(
        "INSERT INTO tags (name, post_count) SELECT * FROM UNNEST($1::text[], $2::int4[])",
        &names,
        &counts
    )
    .execute(connection)
    .await?;
    Ok(())
}

async fn write_versions(
    connection: &mut PgConnection,
    model: &ReadModel,
) -> Result<(), sqlx::Error> {
    let versions: Vec<(&Uuid, &(i32, i64))> = model.versions.iter().collect();
    for chunk in versions.chunks(CHUNK * 4) {
        sqlx::query!(
            r#"INSERT INTO stream_versions (stream_id, version, position)
               SELECT * FROM UNNEST($1::uuid[], $2::int4[], $3::int8[])"#,
            &chunk.iter().map(|(id, _)| **id).collect::<Vec<_>>(),
            &chunk
                .iter()
                .map(|(_, (version, _))| *version)
                .collect::<Vec<_>>(),
            &chunk
                .iter()
                .map(|(_, (_, position))| *position)
                .collect::<Vec<_>>(),
        )
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}
