# The controller's image: a static binary on distroless, as non-root.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /splitter ./cmd/splitter

FROM gcr.io/distroless/static:nonroot
COPY --from=build /splitter /splitter
USER 65532:65532
ENTRYPOINT ["/splitter"]
