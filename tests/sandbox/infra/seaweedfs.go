package infra

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// SeaweedFS is one `weed server -s3` process: master, volume server,
// filer and S3 gateway, each on its own loopback port.
type SeaweedFS struct {
	Binary     string
	DataDir    string // DIR/s3
	ConfigFile string // DIR/s3.json, the identities
	LogFile    string // DIR/weed.log
	Ports      WeedPorts
	Creds      Credentials
	Bucket     string // created at start

	proc *process
}

// WeedPorts are the HTTP and gRPC ports of each weed component.
type WeedPorts struct {
	Master, MasterGRPC, Volume, VolumeGRPC, Filer, FilerGRPC, S3, S3GRPC int
}

// WeedBinary is where build.sh puts the weed binary.
func WeedBinary() string {
	cache := os.Getenv("BGRUN_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "bgrun")
	}
	return filepath.Join(cache, "bin", "weed")
}

// NewSeaweedFS describes a store under dir with a fresh random key pair.
func NewSeaweedFS(dir string, ports []int, bucket string) *SeaweedFS {
	return &SeaweedFS{
		Binary:     WeedBinary(),
		DataDir:    filepath.Join(dir, "s3"),
		ConfigFile: filepath.Join(dir, "s3.json"),
		LogFile:    filepath.Join(dir, "weed.log"),
		Ports:      WeedPorts{ports[0], ports[1], ports[2], ports[3], ports[4], ports[5], ports[6], ports[7]},
		Creds: Credentials{
			AccessKey: "SANDBOX" + strings.ToUpper(RandomSecret(7)),
			SecretKey: RandomSecret(20),
			Region:    "us-east-1",
		},
		Bucket: bucket,
	}
}

// WeedVolumeSizeMB is the size a SeaweedFS volume grows to before the
// master opens another one. Volumes are not preallocated: an empty store
// takes no disk.
const WeedVolumeSizeMB = 1024

// WeedMaxVolumes is how many volumes the store may open under dir: room for
// 40 GiB, fewer when the disk has less than that free (80% of the free
// space, and never fewer than 8: an almost full disk still starts the
// sandbox). The store holds about WeedMaxVolumes GiB in total.
func WeedMaxVolumes(dir string) int {
	const want = 40
	var st syscall.Statfs_t
	probe := dir
	for probe != "/" && probe != "." {
		if err := syscall.Statfs(probe, &st); err == nil {
			break
		}
		probe = filepath.Dir(probe)
	}
	if syscall.Statfs(probe, &st) != nil {
		return want
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	n := int(free * 8 / 10 / (int64(WeedVolumeSizeMB) << 20))
	if n > want {
		return want
	}
	if n < 8 {
		return 8
	}
	return n
}

// WeedPortsNeeded is how many free ports NewSeaweedFS takes.
func WeedPortsNeeded() int { return 8 }

// Endpoint is the S3 gateway's URL.
func (s *SeaweedFS) Endpoint() string {
	return fmt.Sprintf("http://127.0.0.1:%d", s.Ports.S3)
}

func (s *SeaweedFS) writeConfig() error {
	type cred struct {
		AccessKey string `json:"accessKey"`
		SecretKey string `json:"secretKey"`
	}
	type identity struct {
		Name        string   `json:"name"`
		Credentials []cred   `json:"credentials"`
		Actions     []string `json:"actions"`
	}
	cfg := map[string][]identity{"identities": {{
		Name:        "sandbox",
		Credentials: []cred{{s.Creds.AccessKey, s.Creds.SecretKey}},
		Actions:     []string{"Admin", "Read", "List", "Tagging", "Write"},
	}}}
	data, _ := json.MarshalIndent(cfg, "", "  ")
	return os.WriteFile(s.ConfigFile, data, 0o600)
}

// Start runs weed, waits until a signed ListBuckets succeeds and creates
// the bucket.
func (s *SeaweedFS) Start(ctx context.Context) error {
	if _, err := os.Stat(s.Binary); err != nil {
		return fmt.Errorf("no weed binary at %s (run tests/sandbox/build.sh): %v", s.Binary, err)
	}
	if err := os.MkdirAll(s.DataDir, 0o755); err != nil {
		return err
	}
	if err := s.writeConfig(); err != nil {
		return err
	}
	logf, err := os.OpenFile(s.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	p := s.Ports
	itoa := strconv.Itoa
	cmd := exec.Command(s.Binary, "server",
		"-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-dir="+s.DataDir,
		"-master.port="+itoa(p.Master), "-master.port.grpc="+itoa(p.MasterGRPC),
		"-master.volumeSizeLimitMB="+itoa(WeedVolumeSizeMB), "-master.telemetry=false",
		"-master.volumePreallocate=false",
		"-volume.port="+itoa(p.Volume), "-volume.port.grpc="+itoa(p.VolumeGRPC),
		"-volume.max="+itoa(WeedMaxVolumes(s.DataDir)), "-volume.preStopSeconds=0",
		"-filer.port="+itoa(p.Filer), "-filer.port.grpc="+itoa(p.FilerGRPC),
		"-s3", "-s3.port="+itoa(p.S3), "-s3.port.grpc="+itoa(p.S3GRPC),
		"-s3.config="+s.ConfigFile,
		// Like real S3: an upload to a missing bucket fails.
		"-s3.autoCreateBucket=false",
		"-s3.port.iceberg=0", "-s3.port.lance=0",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = s.DataDir
	if s.proc, err = startProcess(cmd); err != nil {
		return fmt.Errorf("start weed: %w", err)
	}
	client := &http.Client{Timeout: 2 * time.Second}
	last := "no answer yet"
	ready := false
	for {
		if !ready {
			status, body, err := S3Do(client, "GET", s.Endpoint()+"/", s.Creds)
			switch {
			case err != nil:
				last = err.Error()
			case status == 200:
				ready = true
			default:
				last = fmt.Sprintf("ListBuckets: %d %s", status, firstLine(body))
			}
		}
		if ready {
			status, body, err := S3Do(client, "PUT", s.Endpoint()+"/"+s.Bucket, s.Creds)
			switch {
			case err != nil:
				last = err.Error()
			case status == 200 || strings.Contains(body, "BucketAlreadyOwnedByYou"):
				return nil
			default:
				last = fmt.Sprintf("CreateBucket %s: %d %s", s.Bucket, status, firstLine(body))
			}
		}
		if s.proc.exited() {
			return fmt.Errorf("weed exited: %v", s.proc.err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("S3 store not ready: %s", last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// Pid is weed's process id, 0 if not started.
func (s *SeaweedFS) Pid() int {
	if s.proc == nil {
		return 0
	}
	return s.proc.pid()
}

// Exited is closed when weed ends.
func (s *SeaweedFS) Exited() <-chan struct{} {
	if s.proc == nil {
		return nil
	}
	return s.proc.done
}

// Stop terminates weed. Its graceful shutdown takes seconds; the store's
// data goes away with the sandbox, so a kill after a short grace loses
// nothing.
func (s *SeaweedFS) Stop() error {
	if s.proc == nil {
		return nil
	}
	s.proc.stop(syscall.SIGTERM, 2*time.Second)
	s.removeSockets()
	return nil
}

// removeSockets deletes the unix sockets weed puts in /tmp, named by our
// ports; a killed weed leaves them behind.
func (s *SeaweedFS) removeSockets() {
	p := s.Ports
	for _, port := range []int{p.Master, p.MasterGRPC, p.Volume, p.VolumeGRPC, p.Filer, p.FilerGRPC, p.S3, p.S3GRPC} {
		matches, _ := filepath.Glob(fmt.Sprintf("/tmp/seaweedfs-*-%d.sock", port))
		for _, m := range matches {
			os.Remove(m)
		}
	}
}

// PingS3 sends a signed ListBuckets and wants 200.
func PingS3(endpoint string, c Credentials) error {
	client := &http.Client{Timeout: 2 * time.Second}
	status, body, err := S3Do(client, "GET", endpoint+"/", c)
	if err != nil {
		return err
	}
	if status != 200 {
		return fmt.Errorf("ListBuckets: %d %s", status, firstLine(body))
	}
	return nil
}
