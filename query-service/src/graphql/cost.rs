//! What a query may cost, computed before it runs.
//!
//! A field costs 1 plus what its selection costs; a list costs its page size
//! (`first`/`last`, or the default page) times what each of its items costs,
//! plus 1; an aggregate (`totalCount`) costs [`AGGREGATE`]. So the cost bounds
//! the nodes a response can produce and the reads it takes, aliases and
//! nesting included: `posts(first: 100) { nodes { author { posts(first: 100)
//! … } } }` costs over 10,000 and is refused before anything runs, with a
//! `BAD_USER_INPUT` error that states its cost and the limit.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextValidation};
use async_graphql::{ServerError, ValidationResult};
use chronicle_schema::ErrorCode;

/// What one `totalCount` costs: a count over the list's rows.
pub const AGGREGATE: usize = 10;

/// No single field's cost goes past this: sums of many such fields stay far
/// from overflowing, whatever a client nests or aliases.
const CEILING: usize = 1_000_000_000_000;

/// The cost of a list field: its page size (the larger of `first` and
/// `last`, else `default`) times what one item costs, plus the field itself.
/// Sizes out of range are refused by the field itself; here they count at
/// most `max`.
pub fn page(
    first: Option<i32>,
    last: Option<i32>,
    default: usize,
    max: usize,
    item: usize,
) -> usize {
    let size = match (first, last) {
        (None, None) => default,
        (first, last) => first.max(last).unwrap_or(0).clamp(0, max as i32) as usize,
    };
    size.saturating_mul(item).saturating_add(1).min(CEILING)
}

/// Refuses, before execution, a query whose cost is over the limit.
pub struct QueryCost {
    pub limit: usize,
}

impl ExtensionFactory for QueryCost {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(QueryCostCheck { limit: self.limit })
    }
}

struct QueryCostCheck {
    limit: usize,
}

#[async_trait::async_trait]
impl Extension for QueryCostCheck {
    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        metrics::histogram!("chronicle_graphql_query_cost").record(result.complexity as f64);
        if result.complexity <= self.limit {
            return Ok(result);
        }
        let mut error = ServerError::new(
            format!(
                "the query costs {}, over the limit of {}: ask for fewer items per page \
                 (first/last) or fewer nested lists",
                result.complexity, self.limit
            ),
            None,
        );
        let extensions = error.extensions.get_or_insert_with(Default::default);
        extensions.set("code", ErrorCode::BadUserInput.as_str());
        extensions.set("cost", result.complexity as u64);
        extensions.set("limit", self.limit as u64);
        Err(vec![error])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_costs_its_page_times_its_items() {
        assert_eq!(page(None, None, 20, 100, 3), 61);
        assert_eq!(page(Some(100), None, 20, 100, 3), 301);
        assert_eq!(page(None, Some(5), 20, 100, 3), 16);
        // Out of range counts as the most a page can hold; the field refuses it.
        assert_eq!(page(Some(i32::MAX), None, 20, 100, 1), 101);
        assert_eq!(page(Some(-5), None, 20, 100, 1), 1);
        assert_eq!(page(Some(100), None, 20, 100, usize::MAX), CEILING);
    }
}
