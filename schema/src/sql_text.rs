//! Enums stored as TEXT: their Postgres type is text, written and read by
//! their `as_str` and `parse`, so a row type can hold the enum itself.

/// Implements sqlx's `Type`, `Encode` and `Decode` for Postgres TEXT on an
/// enum with `fn as_str(self) -> &'static str` and `fn parse(&str) -> Option<Self>`.
macro_rules! text_enum {
    ($name:ty) => {
        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buffer: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<'q, sqlx::Postgres>>::encode_by_ref(&self.as_str(), buffer)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<'r, sqlx::Postgres>>::decode(value)?;
                <$name>::parse(text)
                    .ok_or_else(|| format!("{text:?} is not a {}", stringify!($name)).into())
            }
        }
    };
}
pub(crate) use text_enum;
