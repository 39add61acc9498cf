//! Compiled SQL and parameters for every operator, the operator parser, and the query shapes.

use super::*;
use crate::schema::{Query, Write};

fn compiled(op: Op) -> (String, Vec<SqlValue>) {
    Query::select("t").where_op("c", op).compile()
}

fn text(value: &str) -> SqlValue {
    SqlValue::from(value)
}

#[test]
fn every_operator_compiles_to_bound_sql() {
    let one = || SqlValue::Integer(1);
    let cases: Vec<(Op, &str, Vec<SqlValue>)> = vec![
        (Op::Eq(one()), r#""c" = ?"#, vec![one()]),
        (Op::Ne(one()), r#""c" != ?"#, vec![one()]),
        (Op::Lt(one()), r#""c" < ?"#, vec![one()]),
        (Op::Le(one()), r#""c" <= ?"#, vec![one()]),
        (Op::Gt(one()), r#""c" > ?"#, vec![one()]),
        (Op::Ge(one()), r#""c" >= ?"#, vec![one()]),
        (Op::like("a%"), r#""c" LIKE ?"#, vec![text("a%")]),
        (Op::NotLike(text("a_")), r#""c" NOT LIKE ?"#, vec![text("a_")]),
        (Op::is_in([1, 2, 3]), r#""c" IN (?, ?, ?)"#, vec![1.into(), 2.into(), 3.into()]),
        (Op::not_in(["x"]), r#""c" NOT IN (?)"#, vec![text("x")]),
        (Op::IsNull, r#""c" IS NULL"#, vec![]),
        (Op::IsNotNull, r#""c" IS NOT NULL"#, vec![]),
        (Op::Eq(SqlValue::Null), r#""c" IS NULL"#, vec![]),
        (Op::Ne(SqlValue::Null), r#""c" IS NOT NULL"#, vec![]),
        (Op::In(vec![]), r#""c" IN ()"#, vec![]),
        (Op::NotIn(vec![]), r#""c" NOT IN ()"#, vec![]),
        (Op::In(vec![one(), SqlValue::Null]), r#"("c" IN (?) OR "c" IS NULL)"#, vec![one()]),
        (
            Op::NotIn(vec![SqlValue::Null, one()]),
            r#"("c" NOT IN (?) AND "c" IS NOT NULL)"#,
            vec![one()],
        ),
    ];
    for (op, condition, params) in cases {
        let expected = format!(r#"SELECT * FROM "t" WHERE {condition}"#);
        assert_eq!(compiled(op.clone()), (expected, params), "{op:?}");
    }
}

#[test]
fn writes_use_the_same_filters_with_params_after_assignments() {
    let (sql, params) = Write::update("t")
        .set("a", 1)
        .where_op("b", Op::not_in([2, 3]))
        .where_op("c", Op::like("%z"))
        .where_op("d", Op::IsNull)
        .compile();
    assert_eq!(
        sql,
        r#"UPDATE "t" SET "a" = ? WHERE "b" NOT IN (?, ?) AND "c" LIKE ? AND "d" IS NULL"#
    );
    assert_eq!(params, vec![1.into(), 2.into(), 3.into(), text("%z")]);
    let filter = Filter::new(("t", "b"), Op::Gt(5.into()));
    let (sql, params) = Write::delete("t").filter(filter).compile();
    assert_eq!(sql, r#"DELETE FROM "t" WHERE "t"."b" > ?"#);
    assert_eq!(params, vec![5.into()]);
}

#[test]
fn parser_knows_sql_operators_and_refuses_the_rest() {
    let parsed = |operator: &str| Op::parse(operator, 1);
    assert_eq!(parsed("=").ok(), Some(Op::Eq(1.into())));
    assert_eq!(parsed("==").ok(), Some(Op::Eq(1.into())));
    assert_eq!(parsed("<>").ok(), Some(Op::Ne(1.into())));
    assert_eq!(parsed(" <= ").ok(), Some(Op::Le(1.into())));
    assert_eq!(parsed("like").ok(), Some(Op::Like(1.into())));
    assert_eq!(parsed("not   Like").ok(), Some(Op::NotLike(1.into())));
    for unknown in ["=>", "; DROP TABLE t", "", "IN", "IS", "LIKE LIKE"] {
        match parsed(unknown) {
            Err(StoreError::UnknownOperator(operator)) => assert_eq!(operator, unknown),
            other => panic!("{unknown:?} parsed as {other:?}"),
        }
    }
}

#[test]
fn hostile_identifiers_stay_one_quoted_identifier() {
    let hostile = r#"x" = 1 OR "1"#;
    let (sql, params) = Query::select(r#"t"; DROP TABLE t; --"#)
        .columns([hostile])
        .where_eq(hostile, 2)
        .order_by(("a.b", hostile))
        .compile();
    assert_eq!(
        sql,
        r#"SELECT "x"" = 1 OR ""1" FROM "t""; DROP TABLE t; --" WHERE "x"" = 1 OR ""1" = ? ORDER BY "a.b"."x"" = 1 OR ""1" ASC"#
    );
    assert_eq!(params, vec![2.into()]);
    // A dotted name is one identifier, never split into table and column.
    let (sql, _) = Query::select("t").where_eq("a.b", 1).compile();
    assert_eq!(sql, r#"SELECT * FROM "t" WHERE "a.b" = ?"#);
}

#[test]
fn query_shapes_joins_and_paging() {
    let base = || Query::select("todos").where_eq("completed", true);
    let one = vec![SqlValue::Integer(1)];
    assert_eq!(
        base().order_by_desc("id").first().compile(),
        (
            r#"SELECT * FROM "todos" WHERE "completed" = ? ORDER BY "id" DESC LIMIT 1"#.into(),
            one.clone()
        )
    );
    assert_eq!(
        base().count().compile(),
        (r#"SELECT COUNT(*) AS "count" FROM "todos" WHERE "completed" = ?"#.into(), one.clone())
    );
    assert_eq!(
        base().limit(5).offset(10).count().compile().0,
        r#"SELECT COUNT(*) AS "count" FROM (SELECT * FROM "todos" WHERE "completed" = ? LIMIT 5 OFFSET 10)"#
    );
    assert_eq!(
        base().exists().compile().0,
        r#"SELECT EXISTS (SELECT * FROM "todos" WHERE "completed" = ?) AS "exists""#
    );
    assert_eq!(
        base().offset(3).compile().0,
        r#"SELECT * FROM "todos" WHERE "completed" = ? LIMIT -1 OFFSET 3"#
    );
    let (sql, params) = Query::select("todos")
        .columns([("todos", "id"), ("tags", "name")])
        .left_join("tags", ("todos", "id"), ("tags", "todoId"))
        .where_op(("tags", "name"), Op::like("u%"))
        .order_by(("todos", "id"))
        .compile();
    assert_eq!(
        sql,
        r#"SELECT "todos"."id", "tags"."name" FROM "todos" LEFT JOIN "tags" ON "todos"."id" = "tags"."todoId" WHERE "tags"."name" LIKE ? ORDER BY "todos"."id" ASC"#
    );
    assert_eq!(params, vec![text("u%")]);
}

#[test]
fn raw_sql_is_sent_as_given_and_refined_as_a_subquery() {
    let raw = || Query::sql("SELECT id FROM todos WHERE text = ?", [text("a")]);
    assert_eq!(raw().compile(), ("SELECT id FROM todos WHERE text = ?".into(), vec![text("a")]));
    assert_eq!(
        raw().where_op("id", Op::Gt(text("b"))).first().compile(),
        (
            r#"SELECT * FROM (SELECT id FROM todos WHERE text = ?) WHERE "id" > ? LIMIT 1"#.into(),
            vec![text("a"), text("b")]
        )
    );
    assert_eq!(
        raw().count().compile().0,
        r#"SELECT COUNT(*) AS "count" FROM (SELECT id FROM todos WHERE text = ?)"#
    );
}
