// smoke-app: the one binary in the smoke test's FROM-scratch image (no
// busybox or distro image can be pulled here).  Pure Go (CGO_ENABLED=0), so
// it is static and uses Go's own DNS resolver, which reads the pod's
// /etc/resolv.conf written by the kubelet (search path, ndots, cluster DNS).
//
//	smoke-app serve :8080        HTTP server answering "delinkcious-smoke ok"
//	smoke-app lookup NAME...     resolve each NAME, print "NAME -> IPs"
//	smoke-app get URL            HTTP GET, print the body
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: smoke-app serve ADDR | lookup NAME... | get URL")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			host, _ := os.Hostname()
			fmt.Fprintf(w, "delinkcious-smoke ok from %s\n", host)
		})
		fmt.Println("listening on", os.Args[2])
		if err := http.ListenAndServe(os.Args[2], nil); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	case "lookup":
		failed := false
		for _, name := range os.Args[2:] {
			addrs, err := net.LookupHost(name)
			if err != nil {
				fmt.Printf("%s -> ERROR %v\n", name, err)
				failed = true
				continue
			}
			fmt.Printf("%s -> %v\n", name, addrs)
		}
		if failed {
			os.Exit(1)
		}
	case "get":
		c := http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Printf("%d %s", resp.StatusCode, body)
		if resp.StatusCode != 200 {
			os.Exit(1)
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}
