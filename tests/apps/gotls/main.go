// An HTTPS server and client with only the standard library (crypto/tls).
//
//	gotls serve PORT CERT KEY
//	gotls client PORT   (each stdin line is a path to GET over one keep-alive
//	                     connection; prints the status code)
package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

func main() {
	switch os.Args[1] {
	case "serve":
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/missing" {
				http.NotFound(w, r)
				return
			}
			fmt.Fprintf(w, "go says hi to %s\n", r.URL.Path)
		})
		addr := "127.0.0.1:" + os.Args[2]
		if err := http.ListenAndServeTLS(addr, os.Args[3], os.Args[4], nil); err != nil {
			panic(err)
		}
	case "client":
		client := &http.Client{Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
			ForceAttemptHTTP2: false,
			TLSNextProto:      map[string]func(string, *tls.Conn) http.RoundTripper{},
			MaxIdleConns:      1,
		}}
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			resp, err := client.Get("https://127.0.0.1:" + os.Args[2] + strings.TrimSpace(in.Text()))
			if err != nil {
				fmt.Println("error", err)
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			fmt.Println(resp.StatusCode)
		}
	}
}
