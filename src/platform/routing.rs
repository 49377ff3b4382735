//! What every resource's router shares: its OpenAPI tag, stated once per folder.

use utoipa::openapi::path::Operation;
use utoipa_axum::router::OpenApiRouter;

pub trait Tagged {
    /// Gives every operation that names no tag of its own the resource's tag.
    fn tagged(self, tag: &str) -> Self;
}

impl<S: Clone + Send + Sync + 'static> Tagged for OpenApiRouter<S> {
    fn tagged(mut self, tag: &str) -> Self {
        for item in self.get_openapi_mut().paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                tag_if_untagged(operation, tag);
            }
        }
        self
    }
}

fn tag_if_untagged(operation: &mut Operation, tag: &str) {
    if operation.tags.as_ref().is_none_or(Vec::is_empty) {
        operation.tags = Some(vec![tag.to_owned()]);
    }
}
