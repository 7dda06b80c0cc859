package infra

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestPostgres(t *testing.T) {
	dir := t.TempDir()
	ports, err := FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	pg := NewPostgres(dir, ports[0])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	err = pg.Start(ctx)
	t.Logf("postgres started in %v", time.Since(start))
	defer pg.RemoveData()
	defer pg.Stop()
	if err != nil {
		t.Fatalf("%v\n%s", err, Tail(pg.LogFile, 20))
	}
	conn, err := pgx.Connect(ctx, pg.AppURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var user, db string
	var createdb bool
	if err := conn.QueryRow(ctx, "SELECT current_user, current_database(), rolcreatedb FROM pg_roles WHERE rolname = current_user").Scan(&user, &db, &createdb); err != nil {
		t.Fatal(err)
	}
	if user != "physioflow" || db != "physioflow_local" || !createdb {
		t.Errorf("connected as %s to %s, createdb %v", user, db, createdb)
	}
	bad := pg.AppURL()
	wrong := *pg
	wrong.Password = "wrong"
	if c, err := pgx.Connect(ctx, wrong.AppURL()); err == nil {
		c.Close(ctx)
		t.Errorf("wrong password accepted (%s)", bad[:10])
	}
	if err := pg.Stop(); err != nil {
		t.Error(err)
	}
	pg.RemoveData()
	if _, err := os.Lstat(pg.Link); !os.IsNotExist(err) {
		t.Errorf("%s left behind", pg.Link)
	}
}
