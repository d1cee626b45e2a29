/**
 * Media types ocibuild writes and reads. OCI names from the image-spec
 * (media-types.md); Docker schema2 names because registries and `docker load`
 * still hand them out, and a reader must accept both.
 */
export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const OCI_LAYER_TAR = 'application/vnd.oci.image.layer.v1.tar';
export const OCI_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
export const OCI_LAYER_ZSTD = 'application/vnd.oci.image.layer.v1.tar+zstd';

export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const DOCKER_MANIFEST_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const DOCKER_CONFIG = 'application/vnd.docker.container.image.v1+json';
export const DOCKER_LAYER_GZIP = 'application/vnd.docker.image.rootfs.diff.tar.gzip';

/** image-layout.md: the content of the `oci-layout` file ocibuild writes. */
export const IMAGE_LAYOUT_VERSION = '1.0.0';

/** annotations.md: pre-defined annotation keys ocibuild uses. */
export const ANNOTATION_REF_NAME = 'org.opencontainers.image.ref.name';
export const ANNOTATION_CREATED = 'org.opencontainers.image.created';
export const ANNOTATION_SOURCE = 'org.opencontainers.image.source';
export const ANNOTATION_REVISION = 'org.opencontainers.image.revision';
export const ANNOTATION_BASE_NAME = 'org.opencontainers.image.base.name';
export const ANNOTATION_BASE_DIGEST = 'org.opencontainers.image.base.digest';

const MANIFESTS = new Set([OCI_MANIFEST, DOCKER_MANIFEST]);
const INDICES = new Set([OCI_INDEX, DOCKER_MANIFEST_LIST]);
const LAYERS = new Set([OCI_LAYER_TAR, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, DOCKER_LAYER_GZIP]);

export function isManifestType(mediaType: string): boolean {
  return MANIFESTS.has(mediaType);
}

export function isIndexType(mediaType: string): boolean {
  return INDICES.has(mediaType);
}

export function isLayerType(mediaType: string): boolean {
  return LAYERS.has(mediaType);
}

/**
 * The OCI name of a layer media type, for an OCI manifest: a Docker schema2 base's
 * gzip layers keep their bytes and digests but are listed under the OCI type, as the
 * manifest around them is OCI (umoci and skopeo refuse a Docker layer type in an OCI
 * manifest; BuildKit and buildah convert the same way).
 */
export function ociLayerMediaType(mediaType: string): string {
  return mediaType === DOCKER_LAYER_GZIP ? OCI_LAYER_GZIP : mediaType;
}

/** The compression a layer media type implies, for readers that must decompress. */
export function layerCompression(mediaType: string): 'none' | 'gzip' | 'zstd' {
  if (mediaType === OCI_LAYER_GZIP || mediaType === DOCKER_LAYER_GZIP) return 'gzip';
  if (mediaType === OCI_LAYER_ZSTD) return 'zstd';
  if (mediaType === OCI_LAYER_TAR) return 'none';
  throw new Error(`not a layer media type: ${mediaType}`);
}
