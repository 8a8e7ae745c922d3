//! The todo-app's models. Each publishes its own committed changes on its route.

pub mod todo_item;
pub mod todo_list;
