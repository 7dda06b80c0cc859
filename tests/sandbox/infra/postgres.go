package infra

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a private PostgreSQL cluster for one sandbox.
type Postgres struct {
	DataDir       string // the cluster's data directory (may be a symlink target)
	Link          string // DIR/pg; a symlink when DataDir had to live elsewhere
	LogFile       string
	Port          int
	User          string // the application role: LOGIN CREATEDB
	Password      string
	Database      string // owned by User
	SuperUser     string
	SuperPassword string

	proc *process
}

// NewPostgres describes a cluster under dir; Start creates and runs it.
func NewPostgres(dir string, port int) *Postgres {
	return &Postgres{
		Link:          filepath.Join(dir, "pg"),
		DataDir:       filepath.Join(dir, "pg"),
		LogFile:       filepath.Join(dir, "pg.log"),
		Port:          port,
		User:          "physioflow",
		Password:      RandomSecret(12),
		Database:      "physioflow_local",
		SuperUser:     "postgres",
		SuperPassword: RandomSecret(12),
	}
}

// PGBinDir finds the directory holding initdb and postgres.
func PGBinDir() (string, error) {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	// Debian's pg_config may belong to libpq-dev without a server beside it.
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(matches, func(i, j int) bool { return pgMajor(matches[i]) > pgMajor(matches[j]) })
	if len(matches) > 0 {
		return filepath.Dir(matches[0]), nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("no PostgreSQL server found (initdb not in pg_config --bindir, /usr/lib/postgresql/*/bin or PATH)")
}

func pgMajor(initdb string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdb))))
	return n
}

// serverUser is the account the server runs as: postgres refuses root.
func serverUser() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, and PostgreSQL refuses root: need a postgres user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{uint32(gid)}}, nil
}

// traversable reports whether cred can search every directory above path.
func traversable(path string, cred *syscall.Credential) bool {
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(dir)
		if err != nil {
			return false
		}
		st := fi.Sys().(*syscall.Stat_t)
		mode := fi.Mode().Perm()
		var ok bool
		switch {
		case st.Uid == cred.Uid:
			ok = mode&0o100 != 0
		case st.Gid == cred.Gid:
			ok = mode&0o010 != 0
		default:
			ok = mode&0o001 != 0
		}
		if !ok {
			return false
		}
		if dir == "/" {
			return true
		}
	}
}

func (p *Postgres) command(cred *syscall.Credential, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8")
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		cmd.Dir = "/"
	}
	return cmd
}

// Start runs initdb, starts the server, waits until it accepts
// connections and creates the application role and database.
func (p *Postgres) Start(ctx context.Context) error {
	bin, err := PGBinDir()
	if err != nil {
		return err
	}
	cred, err := serverUser()
	if err != nil {
		return err
	}
	if cred != nil {
		dir := filepath.Dir(p.Link)
		if fi, err := os.Stat(dir); err == nil {
			os.Chmod(dir, fi.Mode().Perm()|0o111)
		}
		if !traversable(p.Link, cred) {
			// A directory above DIR is closed to the postgres user (a
			// home directory, say): keep the data in /tmp, link it.
			// (/tmp itself: TMPDIR may be inside that directory)
			tmp, err := os.MkdirTemp("/tmp", "bgrun-sandbox-pg-")
			if err != nil {
				return err
			}
			os.Chmod(tmp, 0o755)
			p.DataDir = filepath.Join(tmp, "data")
			if err := os.Symlink(p.DataDir, p.Link); err != nil {
				return err
			}
		}
	}
	if err := os.Mkdir(p.DataDir, 0o700); err != nil {
		return err
	}
	if cred != nil {
		if err := os.Chown(p.DataDir, int(cred.Uid), int(cred.Gid)); err != nil {
			return err
		}
	}
	logf, err := os.OpenFile(p.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()

	// initdb reads the superuser password from a file the server user can
	// open (a pipe from us would belong to root): next to the data
	// directory, which it can reach (TMPDIR may be inside a 0700 clone).
	pwfile, err := os.CreateTemp(filepath.Dir(p.DataDir), "bgrun-sandbox-pw-")
	if err != nil {
		return err
	}
	defer os.Remove(pwfile.Name())
	_, err = pwfile.WriteString(p.SuperPassword + "\n")
	pwfile.Close()
	if err != nil {
		return err
	}
	if cred != nil {
		if err := os.Chown(pwfile.Name(), int(cred.Uid), int(cred.Gid)); err != nil {
			return err
		}
	}
	initdb := p.command(cred, filepath.Join(bin, "initdb"),
		"-D", p.DataDir, "-U", p.SuperUser, "--pwfile="+pwfile.Name(),
		"--auth-host=scram-sha-256", "--auth-local=trust",
		"-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
	initdb.Stdout, initdb.Stderr = logf, logf
	if err := initdb.Run(); err != nil {
		return fmt.Errorf("initdb: %w", err)
	}

	// Unix sockets have a path limit of 107 bytes; the tests use TCP.
	sockets := p.DataDir
	if len(sockets) > 80 || strings.ContainsAny(sockets, `'\`) {
		sockets = ""
	}
	conf := fmt.Sprintf(`
# bgrun sandbox: private, loopback only, fast and unsafe.
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
max_connections = 60
shared_buffers = 16MB
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = minimal
max_wal_senders = 0
log_min_messages = warning
log_connections = off
`, p.Port, sockets)
	f, err := os.OpenFile(filepath.Join(p.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(conf)
	f.Close()
	if err != nil {
		return err
	}

	server := p.command(cred, filepath.Join(bin, "postgres"), "-D", p.DataDir)
	server.Stdout, server.Stderr = logf, logf
	if p.proc, err = startProcess(server); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	if err := p.waitReady(ctx); err != nil {
		return err
	}
	return p.createApp(ctx)
}

// SuperURL is a superuser connection string, for tests that need one.
func (p *Postgres) SuperURL() string {
	return fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/postgres?sslmode=disable", p.SuperUser, p.SuperPassword, p.Port)
}

// AppURL connects as the application role to its database.
func (p *Postgres) AppURL() string {
	return fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable", p.User, p.Password, p.Port, p.Database)
}

func (p *Postgres) waitReady(ctx context.Context) error {
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		conn, err := pgx.Connect(cctx, p.SuperURL())
		cancel()
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		if p.proc.exited() {
			return fmt.Errorf("postgres exited: %v", p.proc.err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("postgres did not accept connections: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (p *Postgres) createApp(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, p.SuperURL())
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	// The password is hex, so it is safe inside a literal.
	for _, sql := range []string{
		fmt.Sprintf("CREATE ROLE %s LOGIN CREATEDB PASSWORD '%s'", pgx.Identifier{p.User}.Sanitize(), p.Password),
		fmt.Sprintf("CREATE DATABASE %s OWNER %s", pgx.Identifier{p.Database}.Sanitize(), pgx.Identifier{p.User}.Sanitize()),
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("%s: %w", strings.SplitN(sql, " PASSWORD", 2)[0], err)
		}
	}
	return nil
}

// Pid is the postmaster's process id, 0 if not started.
func (p *Postgres) Pid() int {
	if p.proc == nil {
		return 0
	}
	return p.proc.pid()
}

// Exited is closed when the server process ends.
func (p *Postgres) Exited() <-chan struct{} {
	if p.proc == nil {
		return nil
	}
	return p.proc.done
}

// Stop shuts the server down with a fast shutdown (SIGINT: roll back open
// transactions, disconnect clients).
func (p *Postgres) Stop() error {
	if p.proc == nil {
		return nil
	}
	return p.proc.stop(syscall.SIGINT, 10*time.Second)
}

// StopDataDir stops a server that some other process started, by the
// pid in its postmaster.pid; used when the sandbox's own process died.
func StopDataDir(dataDir string) {
	data, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return
	}
	pid, _ := strconv.Atoi(strings.SplitN(string(data), "\n", 2)[0])
	StopPid(pid, syscall.SIGINT, 10*time.Second)
}

// RemoveData removes the data directory, and the symlink to it.
func (p *Postgres) RemoveData() {
	RemovePGDir(p.Link)
}

// RemovePGDir removes DIR/pg and, if it is a symlink, what it points to.
func RemovePGDir(link string) {
	if target, err := os.Readlink(link); err == nil {
		os.RemoveAll(filepath.Dir(target))
	}
	os.RemoveAll(link)
}
