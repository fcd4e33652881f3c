-- The daily sales report reads one day across every product; the primary key
-- starts with the product, so without this it scans the whole table, which
-- grows by a row per product and day.
CREATE INDEX product_sales_day ON product_sales (day);
