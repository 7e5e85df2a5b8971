//! The model's table traits over the store's view and transaction.

use xnet_model::{Record, Tables, TablesMut};
use xnet_store::{Txn, View};

pub struct ViewTables<'a>(pub &'a View<Record>);
pub struct TxnTables<'a, 'b>(pub &'a mut Txn<'b, Record>);

impl Tables for ViewTables<'_> {
    fn get(&self, class: &str, r: &str) -> Option<&Record> {
        self.0.get(class, r)
    }
    fn scan<'s>(&'s self, class: &str) -> Box<dyn Iterator<Item = (&'s str, &'s Record)> + 's> {
        Box::new(self.0.iter(class))
    }
}

impl Tables for TxnTables<'_, '_> {
    fn get(&self, class: &str, r: &str) -> Option<&Record> {
        self.0.get(class, r)
    }
    fn scan<'s>(&'s self, class: &str) -> Box<dyn Iterator<Item = (&'s str, &'s Record)> + 's> {
        Box::new(self.0.iter(class))
    }
}

impl TablesMut for TxnTables<'_, '_> {
    fn put(&mut self, class: &str, r: &str, rec: Record) {
        self.0.put(class, r, rec)
    }
    fn delete(&mut self, class: &str, r: &str) -> bool {
        self.0.delete(class, r)
    }
}
